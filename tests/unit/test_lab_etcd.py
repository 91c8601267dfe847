"""drover.lab.etcd: snapshots, EPHEMERAL wipes and bootstrap --recover-from in the lab, by
Talos's disaster-recovery rules; and addresses handed out lazily from huge networks."""

from __future__ import annotations

import ipaddress
import json
import tracemalloc

import pytest

from drover.errors import AlreadyBootstrapped, QuorumError, TalosError
from drover.lab.datacenter import Datacenter
from tests.unit.test_lab import CONFIG, IMAGE, bring_up, settle, states, step_until


def members(dc: Datacenter) -> dict[str, str]:
    return {node: mid for node, mid, _ in dc.status().etcd_members}


def lose_quorum(dc: Datacenter, *names: str) -> None:
    for name in names or ("lab-cp-2", "lab-cp-3"):
        dc.kill(name)
    assert dc.status().quorum_lost


def wipe(dc: Datacenter, name: str) -> None:
    dc.reset_etcd(name)
    step_until(dc, lambda: states(dc)[name] == "running")


@pytest.fixture
def cluster(make_spec, lab) -> Datacenter:
    """Three control planes and two workers, deployed and settled."""
    spec = make_spec()
    dc = lab(spec)
    bring_up(dc, spec)
    return dc


def test_snapshot_records_members_and_revision_and_hashes_its_content(cluster):
    payload = cluster.snapshot_etcd("lab-cp-2")

    doc = json.loads(payload)
    assert doc["cluster"] == "lab" and doc["members"] == [[n, m] for n, m in
                                                           sorted(members(cluster).items())]
    assert doc["revision"] > 0 and len(doc["hash"]) == 8
    assert cluster.events()[-1][2] == f"etcd-snapshot {doc['snapshot']} (revision " \
                                      f"{doc['revision']})"


@pytest.mark.parametrize("through, error", [
    ("lab-worker-1", TalosError),   # no etcd on a worker
    ("lab-cp-1", QuorumError),      # a majority of members is dead
])
def test_snapshot_is_refused_without_a_healthy_member_with_quorum(cluster, through, error):
    lose_quorum(cluster)

    with pytest.raises(error):
        cluster.snapshot_etcd(through)


def test_etcd_state_is_running_with_data_and_preparing_once_wiped(cluster):
    assert cluster.etcd_state("lab-cp-1") == "Running"
    lose_quorum(cluster)

    cluster.reset_etcd("lab-cp-1")
    assert states(cluster)["lab-cp-1"] == "rebooting"
    step_until(cluster, lambda: states(cluster)["lab-cp-1"] == "running")

    assert cluster.etcd_state("lab-cp-1") == "Preparing"
    with pytest.raises(TalosError, match="control planes only"):
        cluster.etcd_state("lab-worker-1")


def test_recover_brings_etcd_back_with_one_member_and_dead_members_stay_gone(cluster):
    snapshot = cluster.snapshot_etcd("lab-cp-1")
    lose_quorum(cluster)
    settle(cluster)
    assert not any(n.ready for n in cluster.nodes())
    wipe(cluster, "lab-cp-1")

    cluster.recover_etcd("lab-cp-1", snapshot)
    settle(cluster)

    status = cluster.status()
    assert list(members(cluster)) == ["lab-cp-1"]
    assert status.api_up and not status.quorum_lost
    assert (status.bootstraps, status.recoveries) == (1, 1)  # a recovery is no bootstrap
    ready = {n.name for n in cluster.nodes() if n.ready}
    assert ready == {"lab-cp-1", "lab-worker-1", "lab-worker-2"}
    assert {n.name for n in cluster.nodes() if n.state == "dead"} == {"lab-cp-2", "lab-cp-3"}
    with pytest.raises(AlreadyBootstrapped):
        cluster.bootstrap("lab-cp-1")


def test_recover_needs_the_nodes_etcd_data_wiped_first(cluster):
    snapshot = cluster.snapshot_etcd("lab-cp-1")
    lose_quorum(cluster)

    with pytest.raises(AlreadyBootstrapped, match="etcd data directory is not empty"):
        cluster.recover_etcd("lab-cp-1", snapshot)
    assert cluster.status().recoveries == 0


def test_recover_is_refused_while_etcd_has_quorum(cluster):
    snapshot = cluster.snapshot_etcd("lab-cp-1")
    cluster.reset_etcd("lab-cp-3")  # its etcd empty until it rejoins
    step_until(cluster, lambda: states(cluster)["lab-cp-3"] == "running")
    assert cluster.etcd_state("lab-cp-3") == "Preparing"

    with pytest.raises(TalosError, match="split brain"):
        cluster.recover_etcd("lab-cp-3", snapshot)


@pytest.mark.parametrize("tamper, match", [
    (lambda doc: {**doc, "revision": doc["revision"] + 1}, "integrity check failed"),
    (lambda doc: {**doc, "format": "something else"}, "not an etcd snapshot"),
])
def test_a_damaged_snapshot_is_refused(cluster, tamper, match):
    doc = json.loads(cluster.snapshot_etcd("lab-cp-1"))
    lose_quorum(cluster)
    wipe(cluster, "lab-cp-1")

    with pytest.raises(TalosError, match=match):
        cluster.recover_etcd("lab-cp-1", json.dumps(tamper(doc)).encode())


def test_another_clusters_snapshot_is_refused(make_spec, lab, cluster):
    other_spec = make_spec(name="other", control_planes=1, workers=0)
    other = lab(other_spec, cluster.clock)
    bring_up(other, other_spec)
    foreign = other.snapshot_etcd("other-cp-1")
    lose_quorum(cluster)
    wipe(cluster, "lab-cp-1")

    with pytest.raises(TalosError, match="not taken from cluster lab"):
        cluster.recover_etcd("lab-cp-1", foreign)


def test_control_planes_made_while_quorum_is_lost_wait_then_join_the_restored_etcd(
        cluster, make_spec):
    snapshot = cluster.snapshot_etcd("lab-cp-1")
    for name in ("lab-cp-2", "lab-cp-3"):  # a destroy killed half-way
        cluster.delete(name)
    assert cluster.status().quorum_lost
    for node in (make_spec().node("cp", 2), make_spec().node("cp", 3)):  # the next deploy
        cluster.create(node, IMAGE)
        step_until(cluster, lambda n=node: states(cluster)[n.name] == "maintenance")
        cluster.apply_config(node.name, CONFIG, insecure=True)
    mark = len(cluster.events())
    settle(cluster)
    # nobody joins an etcd without quorum: the new control planes' etcd waits, empty
    whats = [(node, what) for _, node, what in cluster.events()[mark:]]
    assert ("lab-cp-2", "etcd-join-waiting") in whats
    assert not [w for w in whats if w[1] == "etcd-member"]
    assert cluster.etcd_state("lab-cp-2") == "Preparing"

    wipe(cluster, "lab-cp-1")
    cluster.recover_etcd("lab-cp-2", snapshot)
    settle(cluster)

    status = cluster.status()
    assert sorted(members(cluster)) == ["lab-cp-1", "lab-cp-2", "lab-cp-3"]
    assert all(ok for _, _, ok in status.etcd_members) and status.api_up
    assert all(n.ready for n in cluster.nodes())


def test_a_control_plane_still_holding_the_lost_data_never_joins_until_wiped(
        cluster, make_spec):
    snapshot = cluster.snapshot_etcd("lab-cp-1")
    cluster.delete("lab-cp-3")
    cluster.kill("lab-cp-2")
    node = make_spec().node("cp", 4)
    cluster.create(node, IMAGE)
    step_until(cluster, lambda: states(cluster)[node.name] == "maintenance")
    cluster.apply_config(node.name, CONFIG, insecure=True)
    settle(cluster)
    old_id = members(cluster)["lab-cp-1"]

    cluster.recover_etcd(node.name, snapshot)  # lab-cp-1 was not wiped first
    settle(cluster)
    assert list(members(cluster)) == [node.name]
    assert cluster.etcd_state("lab-cp-1") == "Running"  # on the lost etcd's data

    wipe(cluster, "lab-cp-1")
    settle(cluster)
    assert sorted(members(cluster)) == ["lab-cp-1", node.name]
    assert members(cluster)["lab-cp-1"] != old_id  # a new member


def test_restore_brings_back_the_cordons_of_the_snapshot(cluster):
    cluster.set_cordoned("lab-worker-1", True)
    snapshot = cluster.snapshot_etcd("lab-cp-1")
    cluster.set_cordoned("lab-worker-1", False)
    cluster.set_cordoned("lab-worker-2", True)
    lose_quorum(cluster)
    wipe(cluster, "lab-cp-1")

    cluster.recover_etcd("lab-cp-1", snapshot)

    assert {n.name for n in cluster.nodes() if n.cordoned} == {"lab-worker-1"}


def test_wiping_a_member_of_a_healthy_cluster_rejoins_it_under_a_new_id(cluster):
    before = members(cluster)

    wipe(cluster, "lab-cp-2")
    settle(cluster)

    after = members(cluster)
    assert set(after) == set(before) and after["lab-cp-2"] != before["lab-cp-2"]
    assert after["lab-cp-1"] == before["lab-cp-1"]
    assert cluster.status().api_up


@pytest.mark.parametrize("network, first", [
    ("10.0.0.0/8", "10.0.0.10"),
    ("fd00:1::/64", "fd00:1::a"),
])
def test_addresses_come_from_huge_networks_without_listing_them(make_spec, lab, network,
                                                                first):
    spec = make_spec(control_planes=1, workers=1)
    dc = lab(spec)
    dc.network = ipaddress.ip_network(network)  # the spec refuses these now; a lab file may not
    tracemalloc.start()
    try:
        for node in spec.declared_nodes():
            dc.create(node, IMAGE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert [n.address for n in dc.nodes()] == [first, str(ipaddress.ip_address(first) + 1)]
    assert peak < 20 * 2**20
