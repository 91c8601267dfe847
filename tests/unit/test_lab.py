"""drover.lab: the emulated datacenter walks the Talos lifecycle on an injected clock.

The demo profile with a fixed seed makes every intermediate state observable: the tests
jump the ManualClock to `next_change_at()` one change at a time and never sleep.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from drover.errors import (
    AlreadyBootstrapped,
    NodeNotFound,
    NotInMaintenance,
    ProviderError,
    TalosError,
    TransientError,
)
from drover.lab import profiles
from drover.lab.clock import ManualClock
from drover.lab.datacenter import Datacenter
from drover.lab.model import installed_version
from drover.lab.profiles import STEPS, load_profile
from drover.lab.store import LabStore, VirtualClock

IMAGE = "factory.talos.dev/metal-installer/abc123:v1.13.9"
CONFIG = f"version: v1alpha1\nmachine:\n  install:\n    image: {IMAGE}\n"
DEMO = load_profile("demo")


def step(dc: Datacenter) -> float:
    """Jump the lab's clock to its next scheduled change; return that moment."""
    due = dc.next_change_at()
    assert due is not None, "the lab has nothing scheduled"
    dc.clock.sleep_until(due)
    return due


def settle(dc: Datacenter, limit: int = 200) -> None:
    """Let every scheduled change happen, one at a time."""
    for _ in range(limit):
        if dc.next_change_at() is None:
            return
        step(dc)
    raise AssertionError("the lab never settled")


def step_until(dc: Datacenter, done, limit: int = 200) -> None:
    for _ in range(limit):
        if done():
            return
        step(dc)
    raise AssertionError("condition never reached")


def states(dc: Datacenter) -> dict[str, str]:
    return {n.name: n.state for n in dc.nodes()}


def create_all(dc: Datacenter, spec) -> None:
    for node in spec.declared_nodes():
        dc.create(node, IMAGE)


def bring_up(dc: Datacenter, spec, bootstrap: bool = True) -> None:
    """Create, configure and (optionally) bootstrap every declared node, as a deploy would."""
    create_all(dc, spec)
    step_until(dc, lambda: set(states(dc).values()) == {"maintenance"})
    for node in spec.declared_nodes():
        dc.apply_config(node.name, CONFIG, insecure=True)
    step_until(dc, lambda: set(states(dc).values()) == {"running"})
    if bootstrap:
        dc.bootstrap(f"{spec.name}-cp-1")
    settle(dc)


@pytest.fixture
def single(make_spec, lab) -> Datacenter:
    """One control plane, no workers, demo profile: one node's lifecycle in isolation."""
    return lab(make_spec(control_planes=1, workers=0))


# ---- the lifecycle ------------------------------------------------------------------


def test_node_walks_created_booting_maintenance_installing_rebooting_running(single, make_spec):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    seen = [single.create(node, IMAGE).state]
    for _ in range(2):
        moment = step(single)
        current = single.node(node.name)
        assert current.since == moment  # each change lands exactly when it was announced
        seen.append(current.state)
    single.apply_config(node.name, CONFIG, insecure=True)
    seen.append(single.node(node.name).state)
    for _ in range(2):
        step(single)
        seen.append(single.node(node.name).state)

    assert seen == ["created", "booting", "maintenance", "installing", "rebooting", "running"]
    assert single.next_change_at() is None


def test_node_waits_in_maintenance_until_a_config_is_applied(single, make_spec):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    single.create(node, IMAGE)
    step_until(single, lambda: single.node(node.name).state == "maintenance")

    assert single.next_change_at() is None
    single.clock.advance(3600)
    assert single.node(node.name).state == "maintenance"
    assert single.node(node.name).config_hash is None


@pytest.mark.parametrize("state, step_name", [("created", "create"), ("booting", "boot"),
                                              ("installing", "install"),
                                              ("rebooting", "reboot")])
def test_each_state_lasts_its_demo_profile_duration_within_jitter(single, make_spec, state,
                                                                  step_name):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    single.create(node, IMAGE)
    step_until(single, lambda: single.node(node.name).state in (state, "maintenance"))
    if state in ("installing", "rebooting"):
        single.apply_config(node.name, CONFIG, insecure=True)
        step_until(single, lambda: single.node(node.name).state == state)
    entered = single.node(node.name).since

    lasted = step(single) - entered

    base = DEMO.durations[step_name]
    assert base * (1 - DEMO.jitter) <= lasted <= base * (1 + DEMO.jitter)


def test_same_seed_gives_the_same_schedule(make_spec, tmp_path):
    spec = make_spec(seed=7)
    a = Datacenter(spec, tmp_path / "a.db", ManualClock())
    b = Datacenter(spec, tmp_path / "b.db", ManualClock())
    create_all(a, spec)
    create_all(b, spec)

    schedule_a = [step(a) for _ in range(6)]
    schedule_b = [step(b) for _ in range(6)]

    assert schedule_a == schedule_b
    assert states(a) == states(b)


def test_instant_profile_reaches_maintenance_without_time_passing(make_spec, lab):
    dc = lab(make_spec(profile="instant"))
    start = dc.clock.now()
    create_all(dc, make_spec(profile="instant"))

    assert set(states(dc).values()) == {"maintenance"}
    assert dc.clock.now() == start


# ---- Talos API rules ----------------------------------------------------------------


def test_authenticated_apply_to_a_maintenance_node_is_refused(single, make_spec):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    single.create(node, IMAGE)
    step_until(single, lambda: single.node(node.name).state == "maintenance")

    with pytest.raises(TalosError, match="insecurely") as err:
        single.apply_config(node.name, CONFIG, insecure=False)

    assert not isinstance(err.value, NotInMaintenance)
    assert single.node(node.name).state == "maintenance"
    assert single.node(node.name).config_hash is None


def test_insecure_apply_to_a_running_node_raises_not_in_maintenance(make_spec, lab):
    spec = make_spec(control_planes=1, workers=0)
    dc = lab(spec)
    bring_up(dc, spec, bootstrap=False)
    before = dc.node("lab-cp-1").config_hash

    with pytest.raises(NotInMaintenance):
        dc.apply_config("lab-cp-1", CONFIG + "# changed\n", insecure=True)

    assert dc.node("lab-cp-1").config_hash == before


def test_authenticated_apply_to_a_running_node_updates_its_config_in_place(make_spec, lab):
    spec = make_spec(control_planes=1, workers=0)
    dc = lab(spec)
    bring_up(dc, spec, bootstrap=False)
    before = dc.node("lab-cp-1").config_hash

    dc.apply_config("lab-cp-1", CONFIG + "# changed\n", insecure=False)

    after = dc.node("lab-cp-1")
    assert after.state == "running"
    assert after.config_hash not in (None, before)


def test_talos_api_is_unreachable_while_a_node_boots(single, make_spec):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    single.create(node, IMAGE)
    step(single)
    assert single.node(node.name).state == "booting"

    with pytest.raises(TransientError, match="booting"):
        single.apply_config(node.name, CONFIG, insecure=True)


def test_applied_config_records_the_talos_version_it_installs(single, make_spec):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    single.create(node, IMAGE)
    step_until(single, lambda: single.node(node.name).state == "maintenance")
    assert single.node(node.name).talos_version is None

    single.apply_config(node.name, CONFIG, insecure=True)

    assert single.node(node.name).talos_version == "v1.13.9"


@pytest.mark.parametrize("config, version", [
    (CONFIG, "v1.13.9"),
    ("version: v1alpha1\nmachine:\n  install:\n    image: f/i:v1.14.0-beta.1\n", "v1.14.0-beta.1"),
    ("version: v1alpha1\nmachine:\n  install:\n    image: f/i@sha256:abc\n", None),
    ("version: v1alpha1\nmachine: {}\n", None),
    ("apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: x\n---\n" + CONFIG, "v1.13.9"),
])
def test_installed_version_is_the_tag_of_the_install_image(config, version):
    assert installed_version(config) == version


def test_etcd_is_bootstrapped_exactly_once(make_spec, lab):
    spec = make_spec()
    dc = lab(spec)
    bring_up(dc, spec)

    with pytest.raises(AlreadyBootstrapped):
        dc.bootstrap("lab-cp-2")

    assert dc.status().bootstrapped
    assert dc.status().bootstraps == 1


@pytest.mark.parametrize("node", ["lab-worker-1", "lab-cp-1"])
def test_bootstrap_needs_a_running_control_plane(make_spec, lab, node):
    spec = make_spec()
    dc = lab(spec)
    create_all(dc, spec)
    step_until(dc, lambda: set(states(dc).values()) == {"maintenance"})
    dc.apply_config("lab-worker-1", CONFIG, insecure=True)
    step_until(dc, lambda: dc.node("lab-worker-1").state == "running")

    with pytest.raises(TalosError, match="running control-plane"):
        dc.bootstrap(node)  # a running worker, or a control plane still in maintenance

    assert dc.status().bootstraps == 0


def test_nothing_joins_etcd_until_bootstrap(make_spec, lab):
    spec = make_spec()
    dc = lab(spec)
    bring_up(dc, spec, bootstrap=False)

    dc.clock.advance(3600)

    status = dc.status()
    assert (status.bootstrapped, status.api_up, status.etcd_members) == (False, False, [])
    assert not any(n.ready for n in dc.nodes())


def test_control_planes_join_etcd_after_bootstrap_then_api_comes_up_and_nodes_get_ready(
        make_spec, lab):
    spec = make_spec()
    dc = lab(spec)
    bring_up(dc, spec, bootstrap=False)
    dc.bootstrap("lab-cp-1")
    member_counts = []
    while dc.next_change_at() is not None:
        step(dc)
        member_counts.append(len(dc.status().etcd_members))

    status = dc.status()
    assert member_counts[0] == 1 and member_counts[-1] == 3
    assert member_counts == sorted(member_counts)
    assert [node for node, _, healthy in status.etcd_members if healthy] == [
        "lab-cp-1", "lab-cp-2", "lab-cp-3"]
    assert status.api_up and not status.quorum_lost
    assert all(n.ready for n in dc.nodes())
    assert [n.etcd_member for n in dc.nodes()] == [True, True, True, False, False]
    whats = [what for _, _, what in dc.events()]
    assert whats.index("bootstrap") < whats.index("etcd-member") < whats.index("api-up") \
        < whats.index("ready")


@pytest.mark.parametrize("killed, lost", [
    ([], False),
    (["lab-cp-1"], False),
    (["lab-cp-1", "lab-cp-3"], True),
    (["lab-worker-1", "lab-worker-2"], False),
])
def test_quorum_is_lost_when_a_majority_of_control_planes_die_and_stays_lost(
        make_spec, lab, killed, lost):
    spec = make_spec()
    dc = lab(spec)
    bring_up(dc, spec)

    for name in killed:
        dc.kill(name)
    dc.clock.advance(3600)

    status = dc.status()
    assert status.quorum_lost is lost
    assert status.api_up is not lost
    assert {n.name for n in dc.nodes() if n.state == "dead"} == set(killed)
    assert sum(healthy for _, _, healthy in status.etcd_members) == 3 - sum(
        name.startswith("lab-cp") for name in killed)
    # without an API server no kubelet reports: a broken cluster has no Ready node
    alive = [n for n in dc.nodes() if n.state != "dead"]
    assert all(n.ready is not lost for n in alive)


def test_kill_stops_a_node_in_any_state_and_it_never_comes_back(single, make_spec):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    single.create(node, IMAGE)
    step(single)
    assert states(single)[node.name] == "booting"

    single.kill(node.name)
    single.kill(node.name)  # already dead: nothing more happens
    single.clock.advance(3600)

    assert states(single)[node.name] == "dead"
    assert [what for _, _, what in single.events()].count("dead") == 1


# ---- create and delete --------------------------------------------------------------


def test_create_is_idempotent(single, make_spec):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    first = single.create(node, IMAGE)
    step(single)

    again = single.create(node, IMAGE)

    assert again.address == first.address
    assert again.state == "booting"  # the existing VM as it is now, not a new one
    assert [n.name for n in single.nodes()] == [node.name]
    assert [what for _, _, what in single.events()].count("created") == 1


def test_delete_node_is_noop_when_absent(single, make_spec):
    node = make_spec(control_planes=1, workers=0).declared_nodes()[0]
    single.create(node, IMAGE)

    single.delete("lab-worker-9")
    single.delete(node.name)
    single.delete(node.name)

    assert single.nodes() == []
    with pytest.raises(NodeNotFound, match=node.name):
        single.node(node.name)


def test_deleting_every_node_forgets_the_cluster(make_spec, lab):
    spec = make_spec(control_planes=1, workers=1)
    dc = lab(spec)
    bring_up(dc, spec)
    assert dc.status().bootstrapped

    for node in spec.declared_nodes():
        dc.delete(node.name)
    dc.create(spec.declared_nodes()[0], IMAGE)

    status = dc.status()
    assert (status.bootstrapped, status.bootstraps, status.etcd_members) == (False, 0, [])


def test_deleting_some_nodes_keeps_the_cluster(make_spec, lab):
    spec = make_spec(control_planes=1, workers=1)
    dc = lab(spec)
    bring_up(dc, spec)

    dc.delete("lab-worker-1")

    assert dc.status().bootstraps == 1
    assert [n.name for n in dc.nodes()] == ["lab-cp-1"]


# ---- faults ---------------------------------------------------------------------------


def test_create_fails_fault_raises_transient_error_and_creates_nothing(make_spec, lab):
    spec = make_spec(faults=[{"type": "create-fails", "node": "lab-cp-2", "times": 2}])
    dc = lab(spec)
    cp1, cp2 = spec.declared_nodes()[:2]

    with pytest.raises(TransientError, match="lab-cp-2"):
        dc.create(cp2, IMAGE)

    assert dc.create(cp1, IMAGE).name == "lab-cp-1"  # only the named node is affected
    assert [n.name for n in dc.nodes()] == ["lab-cp-1"]


def test_create_fails_fault_fires_exactly_n_times_then_create_succeeds(make_spec, lab):
    spec = make_spec(faults=[{"type": "create-fails", "node": "lab-cp-1", "times": 2}])
    dc = lab(spec)
    node = spec.declared_nodes()[0]
    failures = 0
    for _ in range(4):
        try:
            created = dc.create(node, IMAGE)
            break
        except TransientError:
            failures += 1

    assert failures == 2
    assert created.name == "lab-cp-1"


def test_talos_api_errors_fault_makes_the_api_answer_unavailable(make_spec, lab):
    spec = make_spec(control_planes=1, workers=0,
                     faults=[{"type": "talos-api-errors", "node": "lab-cp-1", "times": 1}])
    dc = lab(spec)
    dc.create(spec.declared_nodes()[0], IMAGE)
    step_until(dc, lambda: dc.node("lab-cp-1").state == "maintenance")

    with pytest.raises(TransientError, match="Unavailable"):
        dc.apply_config("lab-cp-1", CONFIG, insecure=True)

    assert dc.node("lab-cp-1").state == "maintenance"


def test_talos_api_errors_fault_fires_exactly_n_times(make_spec, lab):
    spec = make_spec(control_planes=1, workers=0,
                     faults=[{"type": "talos-api-errors", "node": "lab-cp-1", "times": 2}])
    dc = lab(spec)
    dc.create(spec.declared_nodes()[0], IMAGE)
    step_until(dc, lambda: dc.node("lab-cp-1").state == "maintenance")
    failures = 0
    for _ in range(4):
        try:
            dc.apply_config("lab-cp-1", CONFIG, insecure=True)
            break
        except TransientError:
            failures += 1

    assert failures == 2
    assert dc.node("lab-cp-1").state == "installing"


def test_never_boots_node_stays_booting_and_nothing_is_due_for_it(make_spec, lab):
    spec = make_spec(control_planes=1, workers=1,
                     faults=[{"type": "never-boots", "node": "lab-worker-1"}])
    dc = lab(spec)
    create_all(dc, spec)

    settle(dc)
    dc.clock.advance(86_400)

    assert states(dc) == {"lab-cp-1": "maintenance", "lab-worker-1": "booting"}
    assert dc.next_change_at() is None


def test_dies_fault_turns_a_running_node_dead_after_its_seconds(make_spec, lab):
    spec = make_spec(control_planes=1, workers=1,
                     faults=[{"type": "dies", "node": "lab-worker-1", "afterSeconds": 30}])
    dc = lab(spec)
    bring_up(dc, spec)  # settles, so the death has happened by now
    running_at = next(at for at, node, what in dc.events()
                      if node == "lab-worker-1" and what == "running")

    worker = dc.node("lab-worker-1")
    assert (worker.state, worker.ready) == ("dead", False)
    assert worker.since == pytest.approx(running_at + 30)
    assert dc.node("lab-cp-1").state == "running"


# ---- one lab file, many clusters ---------------------------------------------------------


def test_two_clusters_in_one_lab_file_do_not_see_each_others_nodes(make_spec, lab):
    clock = ManualClock()
    alpha_spec, beta_spec = make_spec(name="alpha"), make_spec(name="beta", workers=1)
    alpha, beta = lab(alpha_spec, clock), lab(beta_spec, clock)
    create_all(alpha, alpha_spec)
    create_all(beta, beta_spec)

    beta.delete("alpha-cp-1")  # not beta's: a no-op

    assert [n.name for n in alpha.nodes()] == [n.name for n in alpha_spec.declared_nodes()]
    assert [n.name for n in beta.nodes()] == ["beta-cp-1", "beta-cp-2", "beta-cp-3",
                                              "beta-worker-1"]
    with pytest.raises(NodeNotFound):
        beta.node("alpha-cp-1")


def test_create_does_not_hand_out_another_clusters_node(make_spec, lab):
    clock = ManualClock()
    # "a-worker" control plane 1 and pool "worker-cp" of cluster "a" share a name
    other_spec = make_spec(name="a-worker", control_planes=1, workers=0)
    mine_spec = make_spec(name="a", control_planes=1, workers=[{"name": "worker-cp", "count": 1}])
    other, mine = lab(other_spec, clock), lab(mine_spec, clock)
    other.create(other_spec.declared_nodes()[0], IMAGE)
    clash = mine_spec.declared_nodes()[1]
    assert clash.name == "a-worker-cp-1"

    with pytest.raises(ProviderError, match=r"a-worker-cp-1: the name is taken by a node of "
                                            r"cluster 'a-worker'"):
        mine.create(clash, IMAGE)
    assert [n.name for n in mine.nodes()] == []
    assert [n.cluster for n in other.nodes()] == ["a-worker"]


def test_addresses_are_unique_across_clusters_and_skip_the_reserved_range(make_spec, lab):
    clock = ManualClock()
    specs = [make_spec(name="alpha"), make_spec(name="beta")]
    labs = [lab(spec, clock) for spec in specs]
    for dc, spec in zip(labs, specs, strict=True):
        create_all(dc, spec)

    addresses = [ipaddress.ip_address(n.address) for dc in labs for n in dc.nodes()]

    assert len(set(addresses)) == len(addresses) == 10
    network = ipaddress.ip_network("10.5.0.0/24")
    assert all(a in network and int(a) - int(network.network_address) >= 10 for a in addresses)


# ---- the virtual clock --------------------------------------------------------------


def test_virtual_clock_is_shared_by_every_datacenter_on_the_file(make_spec, tmp_path):
    spec = make_spec(clock="virtual")
    first = Datacenter(spec, tmp_path / "lab.db")
    assert isinstance(first.clock, VirtualClock)
    first.create(spec.declared_nodes()[0], IMAGE)
    start = first.clock.now()

    second = Datacenter(spec, tmp_path / "lab.db")
    second.clock.sleep_until(second.next_change_at())

    assert first.clock.now() > start
    assert first.clock.now() == second.clock.now()
    assert first.node("lab-cp-1").state == "booting"
    third = Datacenter(spec, tmp_path / "lab.db")  # a new process must not reset the time
    assert third.clock.now() == first.clock.now()


def test_virtual_clock_sleep_until_never_moves_time_backwards(tmp_path):
    clock = VirtualClock(LabStore(tmp_path / "lab.db"), start=1000.0)

    clock.sleep_until(1500.0)
    clock.sleep_until(1200.0)
    clock.sleep(-5)

    assert clock.now() == 1500.0
    clock.sleep(2.5)
    assert clock.now() == 1502.5


# ---- profiles -------------------------------------------------------------------------


def test_realistic_profile_compression_divides_every_duration():
    plain, compressed = load_profile("realistic"), load_profile("realistic", compression=60)

    for name in STEPS:
        assert compressed.duration(name, random.Random(name)) == pytest.approx(
            plain.duration(name, random.Random(name)) / 60)


def test_compressed_lab_schedules_the_compressed_duration(make_spec, lab):
    spec = make_spec(profile="realistic", compression=60, control_planes=1, workers=0)
    dc = lab(spec)
    created = dc.create(spec.declared_nodes()[0], IMAGE)

    lasted = dc.next_change_at() - created.since

    realistic = load_profile("realistic")
    base = realistic.durations["create"] / 60
    assert base * (1 - realistic.jitter) <= lasted <= base * (1 + realistic.jitter)


@pytest.mark.parametrize("name", sorted(profiles._table()))
def test_every_profile_defines_every_step(name):
    profile = load_profile(name)

    assert set(profile.durations) == set(STEPS)
    assert all(seconds >= 0 for seconds in profile.durations.values())
    assert 0 <= profile.jitter < 1


def test_profile_lacking_a_step_is_rejected_naming_the_step(monkeypatch):
    table = {"broken": {"jitter": 0, **{s: 1 for s in STEPS if s != "reboot"}}}
    monkeypatch.setattr(profiles, "_table", lambda: table)

    with pytest.raises(ValueError, match="broken.*reboot"):
        load_profile("broken")
