"""drover.plan, day 2: which nodes a rolling upgrade touches and in what order, how a node
is replaced (and when that would lose etcd quorum), and which numbers new nodes take."""

from __future__ import annotations

import pytest

from drover.errors import NodeNotFound, QuorumError
from drover.plan import Observed, ObservedNode, missing_nodes, plan_replacement, plan_upgrade

OLD, NEW = "v1.13.9", "v1.14.0"
K8S = "1.36.3"


def node(name: str, talos: str = OLD, kubelet: str | None = K8S, cordoned: bool = False,
         stage: str = "running") -> ObservedNode:
    pool = name.split("-")[1]
    return ObservedNode(name=name, role="controlplane" if pool == "cp" else "worker",
                        pool=pool, stage=stage, configured=True, ready=stage == "running",
                        address="10.5.0.10", talos_version=talos, kubernetes_version=kubelet,
                        cordoned=cordoned)


def cluster(*nodes: ObservedNode) -> Observed:
    return Observed({n.name: n for n in nodes}, bootstrapped=True)


def names(*names: str, **kwargs) -> list[ObservedNode]:
    return [node(n, **kwargs) for n in names]


CPS = ["lab-cp-1", "lab-cp-2", "lab-cp-3"]
WORKERS = ["lab-worker-1", "lab-worker-2", "lab-worker-3"]


# ---- plan_upgrade ---------------------------------------------------------------------

@pytest.mark.parametrize("nodes, max_unavailable, batches", [
    pytest.param(names(*CPS, *WORKERS), 1,
                 [["lab-cp-1"], ["lab-cp-2"], ["lab-cp-3"],
                  ["lab-worker-1"], ["lab-worker-2"], ["lab-worker-3"]],
                 id="control-planes-first-one-at-a-time-then-workers-one-by-one"),
    pytest.param(names(*CPS, *WORKERS), 2,
                 [["lab-cp-1"], ["lab-cp-2"], ["lab-cp-3"],
                  ["lab-worker-1", "lab-worker-2"], ["lab-worker-3"]],
                 id="workers-in-batches-of-max-unavailable"),
    pytest.param(names(*CPS, *WORKERS), 10,
                 [["lab-cp-1"], ["lab-cp-2"], ["lab-cp-3"], WORKERS],
                 id="control-planes-never-batched-even-with-a-large-budget"),
    pytest.param(names(*reversed(WORKERS), *reversed(CPS)), 3,
                 [["lab-cp-1"], ["lab-cp-2"], ["lab-cp-3"], WORKERS],
                 id="order-does-not-depend-on-observation-order"),
    pytest.param([*names("lab-cp-1", "lab-worker-2", talos=NEW),
                  *names("lab-cp-2", "lab-cp-3", "lab-worker-1", "lab-worker-3")], 2,
                 [["lab-cp-2"], ["lab-cp-3"], ["lab-worker-1", "lab-worker-3"]],
                 id="nodes-already-at-the-target-are-skipped"),
    pytest.param(names(*CPS, talos=NEW) + names(*WORKERS), 1,
                 [["lab-worker-1"], ["lab-worker-2"], ["lab-worker-3"]],
                 id="a-rerun-after-the-control-planes-continues-with-the-workers"),
    pytest.param(names(*CPS, *WORKERS, talos=NEW), 1, [], id="everything-upgraded"),
])
def test_plan_upgrade_orders_and_batches_the_nodes_still_behind(nodes, max_unavailable,
                                                                batches):
    plan = plan_upgrade(cluster(*nodes), NEW, K8S, max_unavailable)

    assert plan.batches == batches
    assert plan.talos_version == NEW


@pytest.mark.parametrize("nodes, uncordon, first_batch", [
    pytest.param([node("lab-cp-1", talos=NEW, cordoned=True), *names("lab-cp-2", "lab-cp-3")],
                 ["lab-cp-1"], ["lab-cp-2"], id="upgraded-but-left-cordoned-is-uncordoned"),
    pytest.param([node("lab-cp-1", cordoned=True), *names("lab-cp-2", "lab-cp-3")],
                 [], ["lab-cp-1"], id="cordoned-and-behind-is-upgraded-not-just-uncordoned"),
    pytest.param([node("lab-worker-2", talos=NEW, cordoned=True),
                  node("lab-worker-1", talos=NEW, cordoned=True), node("lab-cp-1", talos=NEW)],
                 ["lab-worker-1", "lab-worker-2"], None, id="several-in-name-order"),
])
def test_plan_upgrade_uncordons_nodes_a_stopped_run_left_cordoned(nodes, uncordon,
                                                                 first_batch):
    plan = plan_upgrade(cluster(*nodes), NEW, K8S, 1)

    assert plan.uncordon == uncordon
    assert (plan.batches[0] if plan.batches else None) == first_batch


@pytest.mark.parametrize("kubelets, target, expected", [
    pytest.param(["1.36.3", "1.36.3"], "1.36.3", None, id="every-kubelet-there"),
    pytest.param(["v1.36.3", "1.36.3"], "1.36.3", None, id="v-prefix-on-a-kubelet-ignored"),
    pytest.param(["1.36.3", "1.36.3"], "v1.36.3", None, id="v-prefix-on-the-target-ignored"),
    pytest.param(["v1.36.3", "1.36.2"], "1.36.3", "1.36.3", id="one-kubelet-behind"),
    pytest.param(["v1.36.3", "v1.36.3"], "v1.37.0", "v1.37.0",
                 id="every-kubelet-behind-target-kept-as-given"),
    pytest.param(["1.36.3", None], "1.36.3", "1.36.3", id="an-unknown-kubelet-counts-as-behind"),
])
def test_plan_upgrade_sets_kubernetes_version_only_when_some_kubelet_differs(kubelets, target,
                                                                            expected):
    observed = cluster(node("lab-cp-1", talos=NEW, kubelet=kubelets[0]),
                       node("lab-worker-1", talos=NEW, kubelet=kubelets[1]))

    plan = plan_upgrade(observed, NEW, target, 1)

    assert plan.kubernetes_version == expected
    assert plan.batches == []
    assert plan.empty is (expected is None)


def test_plan_upgrade_of_an_upgraded_cluster_is_empty_and_says_so():
    plan = plan_upgrade(cluster(*names(*CPS, *WORKERS, talos=NEW, kubelet="v1.36.3")),
                        NEW, K8S, 2)

    assert plan.empty
    assert (plan.batches, plan.uncordon, plan.kubernetes_version) == ([], [], None)
    assert plan.describe("lab") == [
        "lab: nothing to do: every node runs Talos v1.14.0 and the target Kubernetes"]


def test_plan_upgrade_describe_lists_uncordons_then_batches_then_kubernetes():
    observed = cluster(node("lab-cp-1", talos=NEW, cordoned=True), *names("lab-cp-2"),
                       *names("lab-worker-1", "lab-worker-2", "lab-worker-3"))

    plan = plan_upgrade(observed, NEW, "1.37.0", 2)

    assert not plan.empty
    assert plan.describe("lab") == [
        "lab: will uncordon lab-cp-1 (already on v1.14.0)",
        "lab: will upgrade lab-cp-2 to Talos v1.14.0",
        "lab: will upgrade lab-worker-1, lab-worker-2 to Talos v1.14.0",
        "lab: will upgrade lab-worker-3 to Talos v1.14.0",
        "lab: will upgrade Kubernetes to 1.37.0",
    ]


def test_plan_upgrade_with_only_an_uncordon_left_is_not_empty():
    plan = plan_upgrade(cluster(node("lab-worker-1", talos=NEW, cordoned=True)), NEW, K8S, 1)

    assert not plan.empty
    assert plan.describe("lab") == ["lab: will uncordon lab-worker-1 (already on v1.14.0)"]


# ---- plan_replacement -------------------------------------------------------------------

HEALTHY = dict.fromkeys(CPS, True)


@pytest.mark.parametrize("present, target, successor", [
    pytest.param([*CPS, "lab-worker-1", "lab-worker-2"], "lab-worker-1", "lab-worker-3",
                 id="worker-gets-the-next-number"),
    pytest.param([*CPS, "lab-worker-1", "lab-worker-2"], "lab-cp-2", "lab-cp-4",
                 id="control-plane-gets-the-next-number"),
    pytest.param(["lab-cp-1", "lab-cp-3", "lab-cp-4", "lab-worker-1", "lab-worker-2"],
                 "lab-cp-1", "lab-cp-5", id="highest-in-the-pool-plus-one-not-the-free-hole"),
    pytest.param([*CPS, "lab-worker-2", "lab-worker-7"], "lab-worker-7", "lab-worker-8",
                 id="replacing-the-highest-numbered-node"),
    pytest.param([*CPS, "lab-cp-4", "lab-worker-1", "lab-worker-2"], "lab-cp-2", "lab-cp-4",
                 id="successor-left-by-a-stopped-attempt-is-reused"),
    pytest.param([*CPS, "lab-worker-1", "lab-worker-2", "lab-worker-3"], "lab-worker-1",
                 "lab-worker-3", id="stopped-worker-replacement-is-reused"),
])
def test_plan_replacement_names_the_successor(make_spec, present, target, successor):
    members = {n: True for n in present if "-cp-" in n}

    plan = plan_replacement(make_spec(), cluster(*names(*present)), members, target)

    assert plan.old == target
    assert plan.new.name == successor
    assert plan.new.pool == target.split("-")[1]
    assert plan.control_plane is ("-cp-" in target)
    assert plan.reachable


def test_rerunning_a_stopped_replacement_never_adds_a_second_successor(make_spec):
    spec = make_spec()
    before = cluster(*names(*CPS, "lab-worker-1", "lab-worker-2"))
    first = plan_replacement(spec, before, HEALTHY, "lab-cp-2")
    # the run stopped after creating the successor, whose member has joined
    after = cluster(*names(*CPS, first.new.name, "lab-worker-1", "lab-worker-2"))

    again = plan_replacement(spec, after, {**HEALTHY, first.new.name: True}, "lab-cp-2")

    assert again.new == first.new


def test_plan_replacement_refuses_a_healthy_control_plane_when_another_member_is_down(
        make_spec):
    observed = cluster(*names("lab-cp-1", "lab-cp-2"), node("lab-cp-3", stage="dead"),
                       *names("lab-worker-1", "lab-worker-2"))
    members = {"lab-cp-1": True, "lab-cp-2": True, "lab-cp-3": False}

    with pytest.raises(QuorumError) as err:
        plan_replacement(make_spec(), observed, members, "lab-cp-1")

    assert str(err.value) == (
        "lab-cp-1: refusing to replace: removing its etcd member leaves 1 healthy of 2 "
        "members, and quorum needs 2 (2 of 3 members are healthy now)")


def test_plan_replacement_allows_the_unhealthy_member_and_skips_drain_for_a_dead_node(
        make_spec):
    observed = cluster(*names("lab-cp-1", "lab-cp-2"), node("lab-cp-3", stage="dead"),
                       *names("lab-worker-1", "lab-worker-2"))
    members = {"lab-cp-1": True, "lab-cp-2": True, "lab-cp-3": False}

    plan = plan_replacement(make_spec(), observed, members, "lab-cp-3")

    assert (plan.old, plan.new.name, plan.control_plane, plan.reachable) == (
        "lab-cp-3", "lab-cp-4", True, False)


@pytest.mark.parametrize("health, target, allowed", [
    pytest.param("HHH", 1, True, id="3-healthy-any-may-go"),
    pytest.param("HHD", 1, False, id="3-one-down-a-healthy-one-may-not"),
    pytest.param("HHD", 3, True, id="3-one-down-the-down-one-may"),
    pytest.param("HDD", 2, False, id="3-quorum-already-lost"),
    pytest.param("HHHHD", 1, True, id="5-one-down-a-healthy-one-may"),
    pytest.param("HHHDD", 1, False, id="5-two-down-a-healthy-one-may-not"),
    pytest.param("HHHDD", 5, True, id="5-two-down-a-down-one-may"),
])
def test_plan_replacement_allows_removing_a_member_only_if_the_rest_keep_quorum(
        make_spec, health, target, allowed):
    cps = [f"lab-cp-{i}" for i in range(1, len(health) + 1)]
    members = {name: mark == "H" for name, mark in zip(cps, health, strict=True)}
    observed = cluster(*[node(n, stage="running" if members[n] else "dead") for n in cps])
    spec = make_spec(control_planes=len(health), workers=0)

    if allowed:
        assert plan_replacement(spec, observed, members, cps[target - 1]).control_plane
    else:
        with pytest.raises(QuorumError, match="refusing to replace"):
            plan_replacement(spec, observed, members, cps[target - 1])


@pytest.mark.parametrize("healthy", [True, False], ids=["member-healthy", "member-down"])
def test_plan_replacement_refuses_the_only_control_plane_of_a_one_cp_cluster(make_spec,
                                                                            healthy):
    spec = make_spec(control_planes=1, workers=1)
    observed = cluster(node("lab-cp-1", stage="running" if healthy else "dead"),
                       node("lab-worker-1"))

    with pytest.raises(QuorumError, match=(
            r"^lab-cp-1: refusing to replace the only control plane: its etcd member holds "
            r"the cluster's state; if it is lost, restore etcd from the latest snapshot "
            r"\(drover recover lab\)")):
        plan_replacement(spec, observed, {"lab-cp-1": healthy}, "lab-cp-1")


def test_plan_replacement_of_a_worker_in_a_one_cp_cluster_is_allowed(make_spec):
    spec = make_spec(control_planes=1, workers=1)
    observed = cluster(node("lab-cp-1"), node("lab-worker-1"))

    plan = plan_replacement(spec, observed, {"lab-cp-1": True}, "lab-worker-1")

    assert plan.new.name == "lab-worker-2"


@pytest.mark.parametrize("members", [
    pytest.param({}, id="no-members"),
    pytest.param(dict.fromkeys(CPS, False), id="every-member-down"),
    pytest.param({"lab-cp-1": True, "lab-cp-2": False, "lab-cp-3": False}, id="quorum-lost"),
])
def test_worker_replacement_never_checks_etcd_quorum(make_spec, members):
    observed = cluster(*names(*CPS, "lab-worker-1", "lab-worker-2"))

    plan = plan_replacement(make_spec(), observed, members, "lab-worker-2")

    assert (plan.new.name, plan.control_plane) == ("lab-worker-3", False)


def test_plan_replacement_of_a_control_plane_that_never_joined_etcd_skips_the_check(
        make_spec):
    observed = cluster(*names(*CPS, "lab-worker-1", "lab-worker-2"))
    members = {"lab-cp-1": True, "lab-cp-2": False}  # lab-cp-3 holds no member

    plan = plan_replacement(make_spec(), observed, members, "lab-cp-3")

    assert plan.new.name == "lab-cp-4"


def test_plan_replacement_of_an_unknown_node_raises_node_not_found(make_spec):
    observed = cluster(*names(*CPS, "lab-worker-1", "lab-worker-2"))

    with pytest.raises(NodeNotFound) as err:
        plan_replacement(make_spec(), observed, HEALTHY, "lab-worker-9")

    assert isinstance(err.value, KeyError)
    assert str(err.value) == "lab-worker-9: no such node in cluster 'lab'"


@pytest.mark.parametrize("target, stage, lines", [
    pytest.param("lab-cp-2", "running", [
        "lab: will cordon and drain lab-cp-2",
        "lab: will remove lab-cp-2's etcd member",
        ("lab: will create lab-cp-4 and push its config; wait until Ready and a healthy etcd "
         "member"),
        "lab: will delete lab-cp-2",
    ], id="reachable-control-plane"),
    pytest.param("lab-worker-1", "dead", [
        "lab: lab-worker-1 is unreachable: will not cordon or drain it",
        "lab: will create lab-worker-3 and push its config; wait until Ready",
        "lab: will delete lab-worker-1",
    ], id="dead-worker"),
])
def test_plan_replacement_describe_lists_each_step(make_spec, target, stage, lines):
    observed = cluster(*[node(n, stage=stage if n == target else "running")
                         for n in [*CPS, "lab-worker-1", "lab-worker-2"]])

    plan = plan_replacement(make_spec(), observed, HEALTHY, target)

    assert plan.reachable is (stage == "running")
    assert plan.describe("lab") == lines


# ---- missing_nodes ----------------------------------------------------------------------

@pytest.mark.parametrize("pool, existing, missing", [
    pytest.param("worker", [], ["lab-worker-1", "lab-worker-2"], id="none-exist"),
    pytest.param("worker", ["lab-worker-2"], ["lab-worker-1"], id="fills-the-lowest-hole"),
    pytest.param("worker", ["lab-worker-1", "lab-worker-2"], [], id="pool-full"),
    pytest.param("worker", ["lab-worker-3"], ["lab-worker-1"],
                 id="replaced-node-counts-missing-takes-lowest-free"),
    pytest.param("cp", ["lab-cp-2"], ["lab-cp-1", "lab-cp-3"], id="skips-the-taken-number"),
    pytest.param("cp", ["lab-cp-1", "lab-cp-3", "lab-cp-4"], [], id="full-with-a-hole"),
    pytest.param("worker", ["lab-worker-1", "lab-worker-2", "lab-worker-3"], [],
                 id="more-than-declared-adds-nothing"),
])
def test_missing_nodes_take_the_lowest_free_numbers(make_spec, pool, existing, missing):
    found = missing_nodes(make_spec(), pool, existing)

    assert [n.name for n in found] == missing
    assert {n.pool for n in found} <= {pool}


def test_plan_upgrade_orders_nodes_by_number_not_by_text():
    observed = cluster(node("lab-cp-10"), node("lab-cp-2"), node("lab-worker-11"),
                       node("lab-worker-9"))

    plan = plan_upgrade(observed, NEW, K8S, max_unavailable=1)

    assert plan.batches == [["lab-cp-2"], ["lab-cp-10"], ["lab-worker-9"], ["lab-worker-11"]]
