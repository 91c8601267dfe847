"""drover.health: per-node checks on a lab cluster, how long each node has been failing
(kept between runs), and the MachineHealthCheck-style decision: replace, wait, or alert."""

from __future__ import annotations

from pathlib import Path

import pytest

from drover.health import ClusterHealthReport, FailureLog, NodeHealth, check, decide
from tests.unit import test_day2_steps
from tests.unit.test_deploy_steps import lab_of

T0 = 1_700_000_000.0
deployed_labs = test_day2_steps.deployed_labs  # fixtures: a deployed cluster, copied per test
deployed = test_day2_steps.deployed


@pytest.fixture
def cluster(deployed):
    """A healthy 3 + 2 cluster, deployed by the library steps on a ManualClock."""
    return deployed(workers=2)


# ---- check --------------------------------------------------------------------------------

def test_check_of_a_deployed_cluster_finds_every_node_healthy(cluster):
    report = check(cluster)

    assert report.unhealthy == []
    assert [(n.node, n.role, n.etcd) for n in report.nodes] == [
        ("lab-cp-1", "controlplane", True), ("lab-cp-2", "controlplane", True),
        ("lab-cp-3", "controlplane", True), ("lab-worker-1", "worker", None),
        ("lab-worker-2", "worker", None)]
    assert (report.cluster, report.api_up, report.etcd_healthy, report.etcd_members,
            report.control_planes) == ("lab", True, 3, 3, 3)
    assert {row["problems"] for row in report.rows()} == {"none"}
    assert report.rows()[3]["etcd"] == "n/a"  # a worker holds no member


@pytest.mark.parametrize("killed, problems, etcd_healthy", [
    pytest.param("lab-worker-2", ["Talos API unreachable", "services down", "NotReady"], 3,
                 id="worker"),
    pytest.param("lab-cp-2", ["Talos API unreachable", "services down",
                              "etcd member unhealthy", "NotReady"], 2, id="control-plane"),
])
def test_check_names_each_problem_of_a_killed_node(cluster, killed, problems, etcd_healthy):
    lab_of(cluster).kill(killed)

    report = check(cluster)

    assert [n.node for n in report.unhealthy] == [killed]
    assert report.unhealthy[0].problems() == problems
    assert (report.api_up, report.etcd_healthy, report.etcd_members) == (
        True, etcd_healthy, 3)  # one member down: quorum holds, the API stays up
    row = next(r for r in report.rows() if r["node"] == killed)
    assert (row["talos api"], row["ready"], row["problems"]) == (
        "FAIL", "FAIL", ", ".join(problems))


def test_check_after_quorum_loss_reports_the_api_down_and_every_node_not_ready(cluster):
    lab_of(cluster).kill("lab-cp-2")
    lab_of(cluster).kill("lab-cp-3")

    report = check(cluster)

    assert not report.api_up
    assert report.etcd_healthy == 1
    assert all("NotReady" in n.problems() for n in report.nodes)


# ---- FailureLog ---------------------------------------------------------------------------

@pytest.fixture
def log(tmp_path: Path) -> FailureLog:
    return FailureLog(tmp_path / "failing.db")


def test_failure_log_keeps_the_first_failing_time_across_updates(log):
    log.update("lab", ["lab-worker-1"], T0)
    log.update("lab", ["lab-worker-1", "lab-cp-2"], T0 + 60)

    since = log.update("lab", ["lab-worker-1", "lab-cp-2"], T0 + 120)

    assert since == {"lab-worker-1": T0, "lab-cp-2": T0 + 60}


def test_failure_log_forgets_a_node_that_recovered_and_restarts_its_clock(log):
    log.update("lab", ["lab-worker-1", "lab-worker-2"], T0)

    assert log.update("lab", ["lab-worker-2"], T0 + 60) == {"lab-worker-2": T0}
    assert log.update("lab", ["lab-worker-1", "lab-worker-2"], T0 + 120) == {
        "lab-worker-1": T0 + 120, "lab-worker-2": T0}


def test_failure_log_forgets_everything_once_every_node_recovered(log):
    log.update("lab", ["lab-worker-1", "lab-cp-1"], T0)

    assert log.update("lab", [], T0 + 60) == {}
    assert log.update("lab", ["lab-cp-1"], T0 + 120) == {"lab-cp-1": T0 + 120}


def test_failure_log_keeps_clusters_apart(log):
    log.update("a", ["a-worker-1"], T0)
    log.update("b", ["b-worker-1"], T0 + 10)

    assert log.update("a", [], T0 + 20) == {}
    assert log.update("b", ["b-worker-1"], T0 + 30) == {"b-worker-1": T0 + 10}


def test_failure_log_survives_between_health_check_runs(tmp_path):
    FailureLog(tmp_path / "failing.db").update("lab", ["lab-worker-1"], T0)

    since = FailureLog(tmp_path / "failing.db").update("lab", ["lab-worker-1"], T0 + 300)

    assert since == {"lab-worker-1": T0}


# ---- decide -------------------------------------------------------------------------------

def node_health(name: str, ok: bool = True) -> NodeHealth:
    control_plane = "-cp-" in name
    return NodeHealth(name, "controlplane" if control_plane else "worker", talos_api=ok,
                      services=ok, etcd=ok if control_plane else None, ready=ok)


def report(total: int, failing: list[str]) -> ClusterHealthReport:
    names = ["lab-cp-1", "lab-cp-2", "lab-cp-3"] + [f"lab-worker-{i}" for i in range(1, 8)]
    nodes = [node_health(n, n not in failing) for n in names[:total]]
    return ClusterHealthReport("lab", nodes, api_up=True, etcd_healthy=3, etcd_members=3,
                               control_planes=3)


NOW = T0 + 1000


@pytest.mark.parametrize("total, failing_for, replace, waiting", [
    pytest.param(5, {}, [], {}, id="all-healthy"),
    pytest.param(5, {"lab-worker-1": 400}, ["lab-worker-1"], {}, id="failing-long-enough"),
    pytest.param(5, {"lab-worker-1": 300}, ["lab-worker-1"], {}, id="exactly-unhealthy-after"),
    pytest.param(5, {"lab-worker-1": 299}, [], {"lab-worker-1": 299}, id="not-long-enough"),
    pytest.param(5, {"lab-cp-2": 500, "lab-worker-1": 100}, ["lab-cp-2"],
                 {"lab-worker-1": 100}, id="two-of-five-is-at-the-40-percent-limit"),
    pytest.param(5, {"lab-cp-2": 500, "lab-worker-2": 600}, ["lab-cp-2", "lab-worker-2"], {},
                 id="both-due-at-the-limit"),
    pytest.param(10, {"lab-cp-1": 900, "lab-worker-1": 900, "lab-worker-2": 10,
                      "lab-worker-3": 900}, ["lab-cp-1", "lab-worker-1", "lab-worker-3"],
                 {"lab-worker-2": 10}, id="four-of-ten-at-the-limit"),
])
def test_decide_replaces_only_nodes_failing_at_least_unhealthy_after(total, failing_for,
                                                                    replace, waiting):
    since = {name: NOW - seconds for name, seconds in failing_for.items()}

    remediation = decide(report(total, list(failing_for)), since, NOW, unhealthy_after=300,
                         max_unhealthy_percent=40)

    assert remediation.replace == replace
    assert remediation.waiting == waiting
    assert remediation.alert is None


def test_decide_counts_a_node_failing_for_the_first_time_as_just_started(log):
    failing = report(5, ["lab-worker-1"])
    since = log.update("lab", [n.node for n in failing.unhealthy], NOW)

    remediation = decide(failing, since, NOW, unhealthy_after=300, max_unhealthy_percent=40)

    assert (remediation.replace, remediation.waiting) == ([], {"lab-worker-1": 0.0})


def test_decide_above_the_limit_alerts_naming_the_nodes_and_replaces_none():
    failing = ["lab-cp-1", "lab-worker-1", "lab-worker-2"]
    since = dict.fromkeys(failing, NOW - 3600)

    remediation = decide(report(5, failing), since, NOW, unhealthy_after=300,
                         max_unhealthy_percent=40)

    assert (remediation.replace, remediation.waiting) == ([], {})
    assert remediation.alert == (
        "lab: 3 of 5 nodes are unhealthy (lab-cp-1, lab-worker-1, lab-worker-2), more than "
        "the 40% limit: not replacing any (a mass failure is a network, power or storage "
        "problem that replacing nodes would make worse); a human needs to look")


@pytest.mark.parametrize("total, failing, limit, alerts", [
    pytest.param(5, 2, 40, False, id="40-percent-at-a-40-limit"),
    pytest.param(5, 3, 40, True, id="60-percent-over-a-40-limit"),
    pytest.param(3, 1, 33, True, id="a-third-is-just-over-33"),
    pytest.param(3, 1, 34, False, id="a-third-is-under-34"),
    pytest.param(5, 1, 0, True, id="a-zero-limit-alerts-on-any-failure"),
    pytest.param(5, 0, 0, False, id="a-zero-limit-with-nothing-failing"),
    pytest.param(5, 5, 100, False, id="a-100-limit-never-alerts"),
])
def test_decide_alerts_only_above_max_unhealthy_percent(total, failing, limit, alerts):
    names = [n.node for n in report(total, []).nodes][:failing]
    since = dict.fromkeys(names, NOW - 3600)

    remediation = decide(report(total, names), since, NOW, unhealthy_after=300,
                         max_unhealthy_percent=limit)

    assert (remediation.alert is not None) is alerts
    assert remediation.replace == ([] if alerts else names)
