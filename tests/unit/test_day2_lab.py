"""drover.lab, day 2: upgrades (A/B images, rollback, Talos's quorum guard), Kubernetes
upgrades, etcd membership, cordon and drain, and lab files made before these columns."""

from __future__ import annotations

import sqlite3

import pytest

from drover.errors import QuorumError, StageTimeout, TalosError
from drover.kube import LabKube, drain_node
from drover.lab.clock import ManualClock
from drover.lab.datacenter import Datacenter
from drover.lab.store import ADDED_COLUMNS, LabStore
from tests.unit.test_lab import IMAGE, bring_up, create_all, settle, step, step_until

OLD, NEW = "v1.13.9", "v1.14.0"
NEW_IMAGE = IMAGE.replace(OLD, NEW)


def events_since(dc: Datacenter, since: int, node: str | None = None) -> list[str]:
    return [what for _, name, what in dc.events()[since:] if node is None or name == node]


@pytest.fixture
def cluster(make_spec, lab) -> Datacenter:
    """A bootstrapped, settled 3 + 1 lab cluster on the demo profile: every node Ready."""
    spec = make_spec(workers=1)
    dc = lab(spec)
    bring_up(dc, spec)
    assert all(n.ready for n in dc.nodes())
    return dc


def member_ids(dc: Datacenter) -> dict[str, str]:
    return {node: member for node, member, _ in dc.status().etcd_members}


# ---- upgrade ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lab-cp-2", "lab-worker-1"])
def test_upgrade_walks_upgrading_rebooting_running_onto_the_new_version_keeping_data(
        cluster, name):
    before = cluster.node(name)
    members = member_ids(cluster)
    mark = len(cluster.events())

    cluster.upgrade(name, NEW_IMAGE)
    seen = [cluster.node(name)]
    while seen[-1].state != "running":
        step(cluster)
        seen.append(cluster.node(name))
    settle(cluster)
    after = cluster.node(name)

    assert [n.state for n in seen] == ["upgrading", "rebooting", "running"]
    assert not any(n.ready for n in seen[:-1])  # not Ready while it upgrades and reboots
    assert [n.talos_version for n in seen] == [OLD, OLD, NEW]
    assert after.ready and after.talos_version == NEW
    assert (after.config_hash, after.address) == (before.config_hash, before.address)
    assert member_ids(cluster) == members  # a control plane keeps its etcd member id
    assert events_since(cluster, mark, name) == [
        "upgrading", "rebooting", "running", f"upgraded to {NEW}", "ready"]


def test_a_control_plane_upgrading_is_an_unhealthy_member_but_quorum_holds(cluster):
    cluster.upgrade("lab-cp-1", NEW_IMAGE)

    status = cluster.status()

    assert {node: ok for node, _, ok in status.etcd_members} == {
        "lab-cp-1": False, "lab-cp-2": True, "lab-cp-3": True}
    assert status.api_up and not status.quorum_lost


def test_upgrading_the_only_control_plane_takes_the_api_down_until_it_is_back(make_spec, lab):
    spec = make_spec(control_planes=1, workers=1)
    dc = lab(spec)
    bring_up(dc, spec)

    dc.upgrade("lab-cp-1", NEW_IMAGE)
    during = dc.status()
    settle(dc)
    after = dc.status()

    assert not during.api_up
    assert after.api_up and not after.quorum_lost


def test_quorum_lost_during_an_upgrade_returns_once_the_upgraded_member_is_back(cluster):
    cluster.upgrade("lab-cp-1", NEW_IMAGE)
    cluster.kill("lab-cp-3")  # for now only lab-cp-2 of 3 members answers
    during = cluster.status()
    settle(cluster)
    after = cluster.status()

    assert not during.api_up
    assert [ok for _, _, ok in after.etcd_members] == [True, True, False]
    assert after.api_up and not after.quorum_lost


def test_upgrading_to_the_current_version_is_a_noop(cluster):
    mark = len(cluster.events())

    cluster.upgrade("lab-cp-1", IMAGE)

    node = cluster.node("lab-cp-1")
    assert (node.state, node.ready, node.talos_version) == ("running", True, OLD)
    assert events_since(cluster, mark) == []
    assert cluster.next_change_at() is None


@pytest.mark.parametrize("times", [1, 2])
def test_upgrade_fails_fault_rolls_back_to_the_old_version_exactly_times_times(
        make_spec, lab, times):
    spec = make_spec(workers=1, faults=[{"type": "upgrade-fails", "node": "lab-worker-1",
                                         "times": times}])
    dc = lab(spec)
    bring_up(dc, spec)
    mark = len(dc.events())

    outcomes = []
    for _ in range(times + 1):
        dc.upgrade("lab-worker-1", NEW_IMAGE)
        settle(dc)
        node = dc.node("lab-worker-1")
        outcomes.append((node.state, node.ready, node.talos_version))

    assert outcomes == [("running", True, OLD)] * times + [("running", True, NEW)]
    assert [e for e in events_since(dc, mark, "lab-worker-1")
            if e.startswith(("rolled-back", "upgraded"))] == (
        [f"rolled-back from {NEW}"] * times + [f"upgraded to {NEW}"])


@pytest.mark.parametrize("disrupt, sick", [
    pytest.param(lambda dc: dc.kill("lab-cp-3"), "lab-cp-3", id="another-member-dead"),
    pytest.param(lambda dc: dc.upgrade("lab-cp-2", NEW_IMAGE), "lab-cp-2",
                 id="another-control-plane-mid-upgrade"),
])
def test_control_plane_upgrade_is_refused_unless_every_etcd_member_is_healthy(cluster,
                                                                             disrupt, sick):
    disrupt(cluster)
    mark = len(cluster.events())

    with pytest.raises(QuorumError) as err:
        cluster.upgrade("lab-cp-1", NEW_IMAGE)

    assert str(err.value) == (f"lab-cp-1: etcd member {sick} is not healthy; all members "
                              "must be healthy to perform an upgrade")
    assert cluster.node("lab-cp-1").state == "running"
    assert events_since(cluster, mark, "lab-cp-1") == []


def test_worker_upgrade_goes_ahead_while_a_control_plane_is_down(cluster):
    cluster.kill("lab-cp-3")

    cluster.upgrade("lab-worker-1", NEW_IMAGE)

    assert cluster.node("lab-worker-1").state == "upgrading"


def test_upgrade_of_a_node_in_maintenance_is_refused(make_spec, lab):
    spec = make_spec(control_planes=1, workers=0)
    dc = lab(spec)
    create_all(dc, spec)
    step_until(dc, lambda: dc.node("lab-cp-1").state == "maintenance")

    with pytest.raises(TalosError, match="^lab-cp-1: cannot upgrade while the node is "
                                         "maintenance$"):
        dc.upgrade("lab-cp-1", NEW_IMAGE)


def test_upgrade_to_an_image_without_a_version_tag_is_refused(cluster):
    with pytest.raises(TalosError, match="has no version tag"):
        cluster.upgrade("lab-worker-1", "factory.talos.dev/metal-installer/abc123")

    assert cluster.node("lab-worker-1").state == "running"


# ---- upgrade_kubernetes, remove_member -------------------------------------------------

def test_upgrade_kubernetes_needs_the_kubernetes_api_up(make_spec, lab):
    spec = make_spec(control_planes=1, workers=1)
    dc = lab(spec)
    bring_up(dc, spec, bootstrap=False)  # every node runs, but no etcd, so no API server

    with pytest.raises(TalosError, match="^lab: upgrade-k8s needs the Kubernetes API up$"):
        dc.upgrade_kubernetes("1.37.0")

    assert {n.kubernetes_version for n in dc.nodes()} == {None}


def test_upgrade_kubernetes_sets_every_running_nodes_kubelet(cluster):
    cluster.kill("lab-worker-1")
    mark = len(cluster.events())

    done = cluster.upgrade_kubernetes("1.37.0")

    assert done == ["lab-cp-1", "lab-cp-2", "lab-cp-3"]  # control planes first; dead skipped
    assert {n.name: n.kubernetes_version for n in cluster.nodes()} == {
        "lab-cp-1": "1.37.0", "lab-cp-2": "1.37.0", "lab-cp-3": "1.37.0",
        "lab-worker-1": None}
    assert events_since(cluster, mark) == ["kubelet 1.37.0"] * 3


def test_remove_member_drops_the_member_once(cluster):
    mark = len(cluster.events())

    cluster.remove_member("lab-cp-2")
    cluster.remove_member("lab-cp-2")  # already gone: nothing to do

    assert sorted(member_ids(cluster)) == ["lab-cp-1", "lab-cp-3"]
    assert not cluster.node("lab-cp-2").etcd_member
    assert events_since(cluster, mark) == ["etcd-member-removed"]
    status = cluster.status()
    assert status.api_up and not status.quorum_lost


def test_removing_a_healthy_member_while_another_is_down_is_refused_like_etcd(cluster):
    cluster.kill("lab-cp-3")
    mark = len(cluster.events())

    with pytest.raises(QuorumError, match=r"^lab-cp-1: etcdserver: unhealthy cluster: removing "
                                          r"this member leaves 1 of 2 members running"):
        cluster.remove_member("lab-cp-1")  # would leave lab-cp-2 running, lab-cp-3 dead

    status = cluster.status()
    assert len(status.etcd_members) == 3 and status.api_up and not status.quorum_lost
    assert len(cluster.events()) == mark


# ---- cordon, eviction, drain -----------------------------------------------------------

def test_set_cordoned_records_an_event_only_on_change(cluster):
    mark = len(cluster.events())

    for cordoned in (True, True, False, False, True):
        cluster.set_cordoned("lab-worker-1", cordoned)

    assert cluster.node("lab-worker-1").cordoned
    assert events_since(cluster, mark) == ["cordoned", "uncordoned", "cordoned"]


def test_evict_pods_succeeds_unless_drain_blocked(make_spec, lab):
    spec = make_spec(control_planes=1, workers=2,
                     faults=[{"type": "drain-blocked", "node": "lab-worker-2"}])
    dc = lab(spec)
    bring_up(dc, spec)
    mark = len(dc.events())

    assert dc.evict_pods("lab-worker-1") is True
    assert dc.evict_pods("lab-worker-2") is False
    assert dc.evict_pods("lab-worker-2") is False  # a PDB keeps refusing, every round

    assert [(name, what) for _, name, what in dc.events()[mark:]] == [
        ("lab-worker-1", "drained")]


def test_drain_node_cordons_and_returns_once_evictions_succeed(cluster, make_spec):
    kube = LabKube(make_spec(workers=1), cluster)
    started = cluster.clock.now()

    drain_node(kube, "lab-worker-1", cluster.clock, timeout=60)

    assert kube.cordoned("lab-worker-1")
    assert cluster.clock.now() == started
    assert events_since(cluster, -2) == ["cordoned", "drained"]


@pytest.mark.parametrize("timeout", [60.0, 12.5])
def test_drain_blocked_by_a_pdb_times_out_exactly_and_leaves_the_node_uncordoned(
        make_spec, lab, timeout):
    spec = make_spec(control_planes=1, workers=1,
                     faults=[{"type": "drain-blocked", "node": "lab-worker-1"}])
    clock = ManualClock()
    dc = lab(spec, clock)
    bring_up(dc, spec)
    kube = LabKube(spec, dc)
    mark = len(dc.events())
    started = clock.now()

    with pytest.raises(StageTimeout) as err:
        drain_node(kube, "lab-worker-1", clock, timeout=timeout)

    assert (err.value.stage, err.value.node) == ("drain", "lab-worker-1")
    assert str(err.value).startswith("lab-worker-1: drain: a PodDisruptionBudget kept refusing")
    assert clock.now() - started == timeout
    assert not kube.cordoned("lab-worker-1")
    assert events_since(dc, mark, "lab-worker-1") == ["cordoned", "uncordoned"]
    assert dc.node("lab-worker-1").state == "running"  # nothing was rebooted


# ---- lab files made before day 2 -------------------------------------------------------

OLD_NODES_TABLE = """
CREATE TABLE nodes (
    name TEXT PRIMARY KEY, cluster TEXT NOT NULL, role TEXT NOT NULL, pool TEXT NOT NULL,
    state TEXT NOT NULL, since REAL NOT NULL, due REAL,
    address TEXT NOT NULL, image TEXT, config_hash TEXT, talos_version TEXT,
    cpus INTEGER, memory_mib INTEGER, disk_gib INTEGER,
    created_at REAL NOT NULL, running_at REAL, join_due REAL, ready_due REAL, ready_at REAL
)"""


def test_lab_file_without_the_day2_columns_is_migrated_and_keeps_its_nodes(make_spec,
                                                                          tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    with con:
        con.execute(OLD_NODES_TABLE)
        con.execute("INSERT INTO nodes (name, cluster, role, pool, state, since, address, "
                    "config_hash, talos_version, created_at, running_at) VALUES "
                    "('lab-worker-1', 'lab', 'worker', 'worker', 'running', 1.0, '10.5.0.10',"
                    " 'abc', ?, 1.0, 1.0)", (OLD,))
    con.close()
    path.chmod(0o600)

    LabStore(path)
    LabStore(path)  # a second open finds every column and changes nothing

    con = sqlite3.connect(path)
    columns = {row[1] for row in con.execute("PRAGMA table_info(nodes)")}
    con.close()
    assert {column for column, _ in ADDED_COLUMNS} <= columns
    dc = Datacenter(make_spec(), path, ManualClock())
    node = dc.node("lab-worker-1")
    assert (node.state, node.talos_version, node.config_hash) == ("running", OLD, "abc")
    assert (node.cordoned, node.kubernetes_version) == (False, None)
    dc.set_cordoned("lab-worker-1", True)  # the new columns work on the old row
    assert dc.node("lab-worker-1").cordoned
