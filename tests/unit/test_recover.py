"""drover.recover: etcd snapshots kept private and pruned, and the recovery of a cluster that
lost quorum, end to end on one lab and a ManualClock, without Prefect."""

from __future__ import annotations

import stat

import pytest

from drover import recover
from drover.deploy import converge, wait_healthy
from drover.errors import InvalidName, NodeFailed, QuorumError, StateError
from tests.unit import test_day2_steps
from tests.unit.test_deploy_steps import lab_of
from tests.unit.test_lab import step_until

# a healthy cluster per test, deployed once per shape a session (fixtures shared with day 2)
deployed, deployed_labs = test_day2_steps.deployed, test_day2_steps.deployed_labs


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_snapshots_are_private_named_by_time_and_only_the_newest_are_kept(deployed):
    infra = deployed()
    taken = []
    for _ in range(3):
        taken.append(recover.snapshot_etcd(infra, keep=2))
        infra.clock.advance(90)
    taken.append(recover.snapshot_etcd(infra, keep=2))  # same second as nothing else: -001

    kept = recover.list_snapshots("lab")
    assert kept == taken[-2:] and recover.latest_snapshot("lab") == taken[-1]
    assert all(mode(p) == 0o600 for p in kept) and mode(kept[0].parent) == 0o700
    assert kept[-1].name.startswith("etcd-20") and kept[-1].name.endswith("-001.snapshot")
    assert not list(kept[0].parent.glob(".*"))  # no partial file left behind


def test_two_snapshots_in_the_same_second_get_their_own_names(deployed):
    infra = deployed()

    first, second = recover.snapshot_etcd(infra), recover.snapshot_etcd(infra)

    assert first != second and recover.list_snapshots("lab") == [first, second]


def test_no_snapshot_is_taken_once_quorum_is_lost(deployed):
    infra = deployed()
    for name in ("lab-cp-2", "lab-cp-3"):
        lab_of(infra).kill(name)

    assert recover.snapshot_source(infra) is None
    with pytest.raises(QuorumError, match="no control plane with a healthy etcd member"):
        recover.snapshot_etcd(infra)


def test_recovery_is_refused_while_etcd_has_quorum(deployed):
    infra = deployed()
    recover.snapshot_etcd(infra)
    lab_of(infra).kill("lab-cp-3")

    with pytest.raises(QuorumError, match=r"has not lost quorum \(2 of 3 members"):
        recover.plan_recovery(infra)


def test_recovery_without_a_snapshot_says_where_one_goes(deployed):
    infra = deployed()
    for name in ("lab-cp-2", "lab-cp-3"):
        lab_of(infra).kill(name)

    with pytest.raises(StateError, match="etcd-snapshots"):
        recover.plan_recovery(infra)


@pytest.mark.parametrize("name", ["../secrets.yaml", "/etc/passwd"])
def test_a_named_snapshot_must_be_a_file_of_the_snapshot_folder(deployed, name):
    deployed()

    with pytest.raises(InvalidName):
        recover.find_snapshot("lab", name)


def test_a_destroy_killed_half_way_is_recovered_and_the_next_deploy_completes(deployed):
    infra = deployed()
    snapshot = recover.snapshot_etcd(infra)
    dc = lab_of(infra)
    for name in ("lab-cp-2", "lab-cp-3"):  # the destroy was killed here
        dc.delete(name)
    with pytest.raises(QuorumError, match="drover recover lab"):
        converge(infra)  # rebuilds the two control planes, which cannot join

    plan = recover.plan_recovery(infra)
    assert (plan.snapshot, plan.target, plan.wipe, plan.gone) == (
        snapshot, "lab-cp-2", ["lab-cp-1"], [])  # an empty control plane needs no wipe
    members = recover.perform_recovery(infra, plan)

    assert members == ["lab-cp-1", "lab-cp-2", "lab-cp-3"]
    state = wait_healthy(infra)
    assert state.waiting == [] and not state.health.quorum_lost
    status = dc.status()
    assert (status.bootstraps, status.recoveries) == (1, 1)


def test_recovery_onto_the_lone_survivor_then_deploy_recreates_the_rest(deployed):
    infra = deployed()
    recover.snapshot_etcd(infra)
    dc = lab_of(infra)
    for name in ("lab-cp-2", "lab-cp-3"):
        dc.delete(name)

    plan = recover.plan_recovery(infra)
    assert (plan.target, plan.wipe, plan.gone) == ("lab-cp-1", ["lab-cp-1"],
                                                   ["lab-cp-2", "lab-cp-3"])
    assert any("stay gone" in line for line in plan.describe())
    assert recover.perform_recovery(infra, plan) == ["lab-cp-1"]
    assert {e[2] for e in dc.events()} >= {"ephemeral-wiped"}

    state = converge(infra)

    assert sorted(m.node for m in state.health.members if m.healthy) == [
        "lab-cp-1", "lab-cp-2", "lab-cp-3"]
    assert dc.status().bootstraps == 1


def test_dead_control_planes_stay_dead_and_are_named_for_replacement(deployed):
    infra = deployed()
    recover.snapshot_etcd(infra)
    for name in ("lab-cp-2", "lab-cp-3"):
        lab_of(infra).kill(name)

    plan = recover.plan_recovery(infra)
    recover.perform_recovery(infra, plan)

    assert plan.gone == ["lab-cp-2", "lab-cp-3"]
    assert [m.node for m in infra.talos.cluster_health().members] == ["lab-cp-1"]


def test_with_no_control_plane_running_there_is_nothing_to_restore_onto(deployed):
    infra = deployed()
    recover.snapshot_etcd(infra)
    for name in ("lab-cp-1", "lab-cp-2", "lab-cp-3"):
        lab_of(infra).kill(name)

    with pytest.raises(NodeFailed, match="drover deploy CONFIG"):
        recover.plan_recovery(infra)


def test_a_rerun_after_the_restore_only_wipes_control_planes_holding_the_lost_data(deployed):
    infra = deployed()
    snapshot = recover.snapshot_etcd(infra)
    dc = lab_of(infra)
    for name in ("lab-cp-2", "lab-cp-3"):
        dc.delete(name)
    with pytest.raises(QuorumError):
        converge(infra)
    nodes = {n.name: n for n in infra.provider.list_nodes()}
    infra.talos.recover_etcd(nodes["lab-cp-2"], snapshot)  # a run killed before the wipe
    with pytest.raises(QuorumError, match="no member yet"):
        recover.plan_recovery(infra)  # etcd is starting: nothing to judge by yet
    step_until(dc, lambda: infra.talos.cluster_health().healthy_members() == 1)

    plan = recover.plan_recovery(infra)
    assert (plan.snapshot, plan.target, plan.wipe) == (None, None, ["lab-cp-1"])
    members = recover.perform_recovery(infra, plan)

    assert members == ["lab-cp-1", "lab-cp-2", "lab-cp-3"]
    with pytest.raises(QuorumError, match="has not lost quorum"):
        recover.plan_recovery(infra)
