"""drover.deploy: the library steps end to end, without Prefect, on one lab and a ManualClock.

Every wait jumps the clock to the lab's next change, so a whole 3 + 2 deploy on the demo
profile runs in a fraction of a second.
"""

from __future__ import annotations

import time

import pytest

from drover.deploy import (
    Infra,
    Readiness,
    bootstrap_etcd,
    configure_node,
    destroy,
    observe,
    prepare_cluster_dir,
    provision_node,
    resolve_image,
    wait_healthy,
)
from drover.errors import NodeFailed, StageTimeout, TalosError
from drover.files import write_private
from drover.home import cluster_dir, remembered_spec
from drover.lab.datacenter import Datacenter
from drover.machineconfig import SecretsBundle, generate_secrets, to_yaml
from drover.plan import plan_deploy
from drover.spec import ClusterSpec
from drover.talos import ClusterHealth
from drover.talos.lab import LabTalos


@pytest.fixture(scope="module")
def bundle() -> SecretsBundle:
    """One secrets bundle for the module: generating its 4096-bit RSA key takes a while."""
    return generate_secrets()


@pytest.fixture
def infra_for(lab, bundle):
    """infra_for(spec): provider and Talos API sharing one lab, secrets already on disk."""
    def build(spec: ClusterSpec) -> Infra:
        write_private(cluster_dir(spec.name) / "secrets.yaml", to_yaml(bundle))
        dc = lab(spec)
        return Infra.on_lab(spec, dc)
    return build


@pytest.fixture
def infra(make_spec, infra_for) -> Infra:
    return infra_for(make_spec())


def lab_of(infra: Infra) -> Datacenter:
    return infra.provider.lab  # type: ignore[attr-defined]


def provision_all(infra: Infra) -> dict[str, float]:
    image = resolve_image(infra)
    return {n.name: provision_node(infra, n, image) for n in infra.spec.declared_nodes()}


def deploy(infra: Infra, on_progress=lambda r: None) -> Readiness:
    provision_all(infra)
    prepare_cluster_dir(infra.spec)
    for node in infra.spec.declared_nodes():
        configure_node(infra, node)
    bootstrap_etcd(infra)
    return wait_healthy(infra, on_progress)


def test_steps_deploy_a_healthy_cluster(infra):
    result = deploy(infra)

    assert result.ready == ["lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-worker-1",
                            "lab-worker-2"]
    assert result.waiting == []
    assert result.health.api_up and not result.health.quorum_lost
    assert result.health.healthy_members() == 3
    assert {n.talos_version for n in lab_of(infra).nodes()} == {"v1.13.9"}


def test_deploy_waits_on_the_lab_clock_not_in_real_time(infra):
    start, wall_start = infra.clock.now(), time.monotonic()

    deploy(infra)

    # one node's path alone (create, boot, install, reboot, bootstrap, API, Ready) is at
    # least 23.5 s on the demo profile less 30 % jitter; none of it was slept for real
    assert infra.clock.now() - start > 23.5 * 0.7
    assert time.monotonic() - wall_start < 5


def test_provision_node_returns_how_long_the_node_took_to_reach_maintenance(infra):
    image = resolve_image(infra)
    first = infra.spec.declared_nodes()[0]
    start = infra.clock.now()

    seconds = provision_node(infra, first, image)

    node = lab_of(infra).node(first.name)
    assert node.state == "maintenance"
    assert seconds == pytest.approx(node.since - start)  # woke exactly when it got there
    assert 5.5 * 0.7 <= seconds <= 5.5 * 1.3  # demo: create 1.5 s + boot 4 s, ±30 %


def test_provision_node_is_noop_after_it_is_provisioned(infra):
    image = resolve_image(infra)
    first = infra.spec.declared_nodes()[0]
    provision_node(infra, first, image)
    before = lab_of(infra).node(first.name)

    seconds = provision_node(infra, first, image)

    assert seconds == 0.0
    assert lab_of(infra).nodes() == [before]


def test_never_booting_node_makes_provision_time_out_naming_node_and_stage(make_spec,
                                                                            infra_for):
    spec = make_spec(faults=[{"type": "never-boots", "node": "lab-worker-2"}])
    infra = infra_for(spec)
    image = resolve_image(infra)
    start = infra.clock.now()

    with pytest.raises(StageTimeout) as err:
        provision_node(infra, spec.declared_nodes()[-1], image)

    assert (err.value.stage, err.value.node) == ("provision", "lab-worker-2")
    assert str(err.value).startswith("lab-worker-2: provision: ")
    assert "still booting" in str(err.value)
    timeout = spec.spec.deployment.timeouts.provision_seconds
    assert infra.clock.now() == start + timeout  # waited to the deadline, not past it


def test_prepare_cluster_dir_creates_secrets_once_and_remembers_the_spec(make_spec):
    spec = make_spec()

    prepare_cluster_dir(spec)
    secrets = (cluster_dir("lab") / "secrets.yaml").read_text()
    prepare_cluster_dir(spec)

    assert (cluster_dir("lab") / "secrets.yaml").read_text() == secrets
    assert remembered_spec("lab") == spec


def test_configure_node_pushes_the_config_once_and_waits_until_running(infra):
    provision_all(infra)
    node = infra.spec.declared_nodes()[3]

    configure_node(infra, node)
    configured = lab_of(infra).node(node.name)
    configure_node(infra, node)  # already configured: no second push

    assert configured.state == "running"
    assert lab_of(infra).node(node.name).config_hash == configured.config_hash
    pushes = [what for _, name, what in lab_of(infra).events()
              if name == node.name and what in ("installing", "config-updated")]
    assert pushes == ["installing"]


def test_bootstrap_etcd_needs_a_running_control_plane(infra):
    provision_all(infra)  # every node waits in maintenance

    with pytest.raises(TalosError, match="no running control plane"):
        bootstrap_etcd(infra)

    assert lab_of(infra).status().bootstraps == 0


def test_bootstrap_etcd_runs_once(infra):
    deploy(infra)

    assert bootstrap_etcd(infra) is None
    assert lab_of(infra).status().bootstraps == 1


def test_bootstrap_etcd_returns_the_node_it_bootstrapped(infra):
    provision_all(infra)
    for node in infra.spec.declared_nodes():
        configure_node(infra, node)

    assert bootstrap_etcd(infra) == "lab-cp-1"
    assert lab_of(infra).status().bootstraps == 1


class StaleHealthTalos(LabTalos):
    """The lab's Talos API, but health is read before a parallel run bootstraps etcd.

    A fake only in timing: it reproduces the race of two runs bootstrapping at once,
    which a single-threaded test cannot otherwise reach.
    """

    def cluster_health(self) -> ClusterHealth:
        health = super().cluster_health()
        return ClusterHealth(False, health.api_up, health.quorum_lost, health.members)


def test_bootstrap_etcd_that_loses_a_race_counts_as_done(infra):
    deploy(infra)
    racing = Infra(infra.spec, infra.provider, StaleHealthTalos(infra.spec, lab_of(infra)),
                   infra.kube)

    assert bootstrap_etcd(racing) is None
    assert lab_of(infra).status().bootstraps == 1


def test_wait_healthy_reports_progress_as_nodes_get_ready(infra):
    reports: list[Readiness] = []

    deploy(infra, on_progress=reports.append)

    counts = [len(r.ready) for r in reports]
    assert counts == sorted(counts)
    assert counts[0] < 5 and counts[-1] == 5
    assert len(set(counts)) > 2  # nodes became Ready one after another, each reported
    assert all(r.total == 5 for r in reports)


def test_wait_healthy_says_how_long_into_the_wait_each_node_got_ready(infra):
    final = deploy(infra)

    assert sorted(final.ready_after) == sorted(final.ready)
    assert all(seconds >= 0 for seconds in final.ready_after.values())
    assert len(set(final.ready_after.values())) > 1  # the demo profile's jitter spreads them


def test_wait_healthy_times_out_naming_a_node_still_waiting(make_spec, infra_for):
    spec = make_spec(control_planes=1, workers=1,
                     faults=[{"type": "never-boots", "node": "lab-worker-1"}],
                     deployment={"timeouts": {"healthSeconds": 120}})
    infra = infra_for(spec)
    image = resolve_image(infra)
    provision_node(infra, spec.declared_nodes()[0], image)
    prepare_cluster_dir(spec)
    configure_node(infra, spec.declared_nodes()[0])
    bootstrap_etcd(infra)

    with pytest.raises(StageTimeout) as err:
        wait_healthy(infra)

    assert (err.value.stage, err.value.node) == ("health", "lab-worker-1")
    assert "1/2 nodes Ready, etcd 1/1 members, API up; waiting for lab-worker-1" in str(
        err.value)


def test_wait_healthy_fails_at_once_on_a_dead_node_instead_of_waiting_out_its_timeout(
        make_spec, infra_for):
    spec = make_spec(control_planes=1, workers=1)
    infra = infra_for(spec)
    image = resolve_image(infra)
    prepare_cluster_dir(spec)
    for node in spec.declared_nodes():
        provision_node(infra, node, image)
        configure_node(infra, node)
    bootstrap_etcd(infra)
    infra.provider.lab.kill("lab-worker-1")
    started = infra.clock.now()

    with pytest.raises(NodeFailed, match=r"^lab-worker-1: health: the node is dead"):
        wait_healthy(infra)

    assert infra.clock.now() - started < spec.spec.deployment.timeouts.health_seconds


def test_observe_reflects_the_lab_and_feeds_the_plan(infra):
    assert observe(infra).empty
    provision_all(infra)

    half = observe(infra)
    assert {(n.stage, n.configured, n.ready) for n in half.nodes.values()} == {
        ("maintenance", False, False)}
    assert not half.bootstrapped
    plan = plan_deploy(infra.spec, half)
    assert (plan.create, len(plan.configure), plan.bootstrap, plan.fresh) == ([], 5, True, False)

    prepare_cluster_dir(infra.spec)
    for node in infra.spec.declared_nodes():
        configure_node(infra, node)
    bootstrap_etcd(infra)
    wait_healthy(infra)

    done = observe(infra)
    assert done.bootstrapped
    assert all(n.stage == "running" and n.configured and n.ready for n in done.nodes.values())
    assert sorted(n.address for n in done.nodes.values()) == sorted(
        n.address for n in infra.provider.list_nodes())
    assert plan_deploy(infra.spec, done).empty


def test_destroy_removes_every_node_workers_first_and_the_cluster_is_forgotten(infra):
    deploy(infra)

    removed = destroy(infra)

    # workers first: etcd keeps its members while anything still runs on the cluster
    assert removed == ["lab-worker-1", "lab-worker-2", "lab-cp-1", "lab-cp-2", "lab-cp-3"]
    assert infra.provider.list_nodes() == []
    assert lab_of(infra).status().bootstraps == 0
    assert observe(infra).empty


def test_destroy_named_nodes_leaves_the_rest(infra):
    provision_all(infra)

    removed = destroy(infra, ["lab-worker-2", "lab-worker-9"])

    assert removed == ["lab-worker-2", "lab-worker-9"]
    assert [n.name for n in infra.provider.list_nodes()] == [
        "lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-worker-1"]
