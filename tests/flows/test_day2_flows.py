"""Day 2 on the lab under Prefect: rolling upgrades, node replacement, health checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from drover.errors import NodeFailed, QuorumError, StageTimeout, UpgradeFailed
from drover.spec import load_spec
from flows.deploy import deploy_cluster
from flows.health import check_health
from flows.replace import replace_node
from flows.upgrade import upgrade_cluster
from tests.flows.conftest import lab_config
from tests.flows.test_deploy_flow import lab_of

OLD, NEW = "v1.13.9", "v1.14.0"
LIFECYCLE = {"created", "booting", "maintenance", "installing", "rebooting", "running",
             "upgrading", "dead"}


def deployed(tmp_path: Path, workers: int = 3, **kwargs) -> str:
    config = lab_config(tmp_path, workers=workers, **kwargs)
    deploy_cluster(config=config)
    return config


def replay(events, since: int, workers: set[str]) -> list[tuple[int, int]]:
    """Walk the lab's events and return, after each one from `since` on, the number of
    healthy etcd members and of unavailable (cordoned or not Ready) workers."""
    state: dict[str, str] = {}
    members: set[str] = set()
    cordoned: set[str] = set()
    ready: set[str] = set()
    seen = []
    for i, (_, node, what) in enumerate(events):
        if what in LIFECYCLE:
            state[node] = what
            if what != "running":
                ready.discard(node)
        elif what == "ready":
            ready.add(node)
        elif what == "etcd-member":
            members.add(node)
        elif what in ("etcd-member-removed", "deleted"):
            members.discard(node)
        elif what == "cordoned":
            cordoned.add(node)
        elif what == "uncordoned":
            cordoned.discard(node)
        if i >= since:
            healthy = sum(1 for m in members if state.get(m) == "running")
            seen.append((healthy, sum(1 for w in workers if w in cordoned or w not in ready)))
    return seen


@pytest.mark.parametrize("max_unavailable", [1, 2])
def test_rolling_upgrade_keeps_etcd_quorum_and_the_worker_budget_and_a_rerun_does_nothing(
        tmp_path: Path, max_unavailable: int) -> None:
    config = deployed(tmp_path)
    lab = lab_of(config)
    before = len(lab.events())

    result = upgrade_cluster(cluster="t", talos_version=NEW, max_unavailable=max_unavailable)

    nodes = lab.nodes()
    assert {n.talos_version for n in nodes} == {NEW}
    assert all(n.ready and not n.cordoned for n in nodes)
    assert result["upgraded"][:3] == ["t-cp-1", "t-cp-2", "t-cp-3"]  # control planes first
    workers = {n.name for n in nodes if n.role == "worker"}
    steps = replay(lab.events(), before, workers)
    assert len(steps) > 30  # every cordon, drain, reboot and Ready was seen
    assert min(healthy for healthy, _ in steps) == 2  # one CP down at a time, never more
    # at least one worker was down at a time, never more than the budget (on the virtual
    # clock a batch's nodes may finish one after another, so the budget may not be reached)
    assert 1 <= max(unavailable for _, unavailable in steps) <= max_unavailable
    assert upgrade_cluster(cluster="t", talos_version=NEW)["changed"] is False
    assert load_spec(config).name == "t"


def test_kubernetes_upgrade_follows_talos_and_is_skipped_when_current(tmp_path: Path) -> None:
    config = deployed(tmp_path, workers=1)
    upgrade_cluster(cluster="t", kubernetes_version="1.37.0")
    assert {n.kubernetes_version for n in lab_of(config).nodes()} == {"1.37.0"}
    assert upgrade_cluster(cluster="t", kubernetes_version="1.37.0")["changed"] is False


def test_a_node_that_fails_its_upgrade_is_rolled_back_and_stops_the_run(tmp_path: Path) -> None:
    config = deployed(tmp_path, faults=[{"type": "upgrade-fails", "node": "t-worker-2"}])
    lab = lab_of(config)

    with pytest.raises(UpgradeFailed, match=r"^t-worker-2: upgrade to v1.14.0 failed; Talos "
                                            r"rolled it back to v1.13.9"):
        upgrade_cluster(cluster="t", talos_version=NEW, max_unavailable=1)

    versions = {n.name: n.talos_version for n in lab.nodes()}
    assert versions == {"t-cp-1": NEW, "t-cp-2": NEW, "t-cp-3": NEW, "t-worker-1": NEW,
                        "t-worker-2": OLD, "t-worker-3": OLD}
    assert all(n.ready and not n.cordoned for n in lab.nodes())  # rolled back and serving
    assert "upgraded to" not in " ".join(w for _, n, w in lab.events() if n == "t-worker-3")

    upgrade_cluster(cluster="t", talos_version=NEW, max_unavailable=1)  # the re-run finishes
    assert {n.talos_version for n in lab.nodes()} == {NEW}


def test_a_drain_blocked_by_a_pdb_fails_the_node_uncordoned_and_not_rebooted(
        tmp_path: Path) -> None:
    config = deployed(tmp_path, workers=1, faults=[{"type": "drain-blocked",
                                                    "node": "t-worker-1"}])
    with pytest.raises(StageTimeout, match=r"^t-worker-1: drain: a PodDisruptionBudget"):
        upgrade_cluster(cluster="t", talos_version=NEW)
    worker = lab_of(config).node("t-worker-1")
    assert (worker.talos_version, worker.cordoned, worker.ready) == (OLD, False, True)


def test_upgrade_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    config = deployed(tmp_path, workers=2)
    result = upgrade_cluster(cluster="t", talos_version=NEW, max_unavailable=2, dry_run=True)
    assert result["plan"][-1] == "t: will upgrade t-worker-1, t-worker-2 to Talos v1.14.0"
    assert {n.talos_version for n in lab_of(config).nodes()} == {OLD}


def test_replacing_a_control_plane_leaves_three_healthy_members_and_none_of_the_old_node(
        tmp_path: Path) -> None:
    config = deployed(tmp_path)
    lab = lab_of(config)

    result = replace_node(cluster="t", node="t-cp-2", reason="test")

    status = lab.status()
    assert result["by"] == "t-cp-4"
    assert sorted(node for node, _, healthy in status.etcd_members if healthy) == [
        "t-cp-1", "t-cp-3", "t-cp-4"]
    assert len(status.etcd_members) == 3
    assert sorted(n.name for n in lab.nodes()) == ["t-cp-1", "t-cp-3", "t-cp-4", "t-worker-1",
                                                   "t-worker-2", "t-worker-3"]
    assert all(n.ready for n in lab.nodes())
    assert deploy_cluster(config=config)["changed"] is False  # the successor counts


def test_replacing_a_worker_keeps_the_node_count(tmp_path: Path) -> None:
    config = deployed(tmp_path)
    replace_node(cluster="t", node="t-worker-1")
    nodes = lab_of(config).nodes()
    assert len(nodes) == 6 and "t-worker-1" not in {n.name for n in nodes}
    assert all(n.ready for n in nodes)
    assert replace_node(cluster="t", node="t-worker-1")["replaced"] is None  # already gone


def test_replacing_a_healthy_control_plane_when_another_is_down_is_refused(
        tmp_path: Path) -> None:
    config = deployed(tmp_path, workers=1)
    lab = lab_of(config)
    lab.kill("t-cp-3")

    with pytest.raises(QuorumError, match=r"t-cp-1: refusing to replace: removing its etcd "
                                          r"member leaves 1 healthy of 2 members, and quorum "
                                          r"needs 2 \(2 of 3 members are healthy now\)"):
        replace_node(cluster="t", node="t-cp-1")
    assert len(lab.status().etcd_members) == 3

    replace_node(cluster="t", node="t-cp-3")  # the dead one may go: quorum holds without it
    status = lab.status()
    assert sum(healthy for _, _, healthy in status.etcd_members) == 3
    assert "t-cp-3" not in {n.name for n in lab.nodes()}


def test_health_check_asks_to_replace_a_node_failing_too_long(tmp_path: Path) -> None:
    config = deployed(tmp_path)
    assert check_health(cluster="t")["unhealthy"] == []
    lab_of(config).kill("t-worker-2")

    first = check_health(cluster="t", unhealthy_after_seconds=60)
    assert (first["unhealthy"], first["replace"]) == (["t-worker-2"], [])  # not long enough
    lab_of(config).clock.sleep(61)
    second = check_health(cluster="t", unhealthy_after_seconds=60)
    assert second["replace"] == ["t-worker-2"] and second["alert"] is None


def test_health_check_alerts_and_replaces_nothing_when_half_the_nodes_fail(
        tmp_path: Path) -> None:
    config = deployed(tmp_path)
    for name in ("t-worker-1", "t-worker-2", "t-worker-3"):
        lab_of(config).kill(name)

    result = check_health(cluster="t", unhealthy_after_seconds=0)

    assert result["replace"] == []
    assert result["alert"].startswith("t: 3 of 6 nodes are unhealthy (t-worker-1, t-worker-2, "
                                      "t-worker-3), more than the 40% limit: not replacing")


def test_an_upgrade_with_a_dead_node_stops_in_pre_flight_touching_nothing(
        tmp_path: Path) -> None:
    config = deployed(tmp_path, workers=2)
    lab = lab_of(config)
    lab.kill("t-worker-2")
    before = len(lab.events())

    with pytest.raises(NodeFailed, match=r"^t-worker-2: upgrade pre-flight: not running"):
        upgrade_cluster(cluster="t", talos_version=NEW)

    assert len(lab.events()) == before
