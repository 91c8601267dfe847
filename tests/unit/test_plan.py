"""drover.plan: what a deploy must do, decided from the spec and an observation (no I/O)."""

from __future__ import annotations

import pytest

from drover.plan import DeployPlan, Observed, ObservedNode, plan_deploy

ALL = ["lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-worker-1", "lab-worker-2"]


def observed(nodes: dict[str, str], bootstrapped: bool) -> Observed:
    """nodes: name -> Talos stage; a node past maintenance has a config."""
    return Observed(
        nodes={name: ObservedNode(
            name=name, role="controlplane" if "-cp-" in name else "worker",
            pool=name.split("-")[1], stage=stage,
            configured=stage not in ("booting", "maintenance"), ready=stage == "running",
            address=f"10.5.0.{10 + i}", talos_version="v1.13.9" if stage == "running" else None)
            for i, (name, stage) in enumerate(nodes.items())},
        bootstrapped=bootstrapped)


@pytest.mark.parametrize("nodes, bootstrapped, create, configure, bootstrap, fresh, unexpected", [
    pytest.param({}, False, ALL, ALL, True, True, [], id="nothing-exists"),
    pytest.param(dict.fromkeys(ALL, "running"), True, [], [], False, False, [],
                 id="everything-done"),
    pytest.param({"lab-cp-1": "running", "lab-cp-2": "maintenance", "lab-worker-1": "booting"},
                 False, ["lab-cp-3", "lab-worker-2"],
                 ["lab-cp-2", "lab-cp-3", "lab-worker-1", "lab-worker-2"], True, False, [],
                 id="killed-mid-provision"),
    pytest.param({**dict.fromkeys(ALL[:4], "running")}, True, ["lab-worker-2"],
                 ["lab-worker-2"], False, False, [], id="one-worker-missing-after-bootstrap"),
    pytest.param({**dict.fromkeys(ALL, "running"), "lab-worker-3": "running",
                  "lab-old-1": "maintenance"}, True, [], [], False, False,
                 ["lab-old-1", "lab-worker-3"], id="undeclared-extras"),
    pytest.param({"lab-cp-1": "running", "lab-cp-2": "running", "lab-cp-4": "running",
                  "lab-worker-1": "running", "lab-worker-2": "running"}, True, [], [], False,
                 False, [], id="a-replaced-node-counts-for-its-pool"),
    pytest.param({"lab-worker-3": "running"}, False, ALL[:4], ALL[:4], True, False, [],
                 id="missing-nodes-take-the-lowest-free-numbers"),
])
def test_plan_deploy_acts_only_on_the_difference(make_spec, nodes, bootstrapped, create,
                                                 configure, bootstrap, fresh, unexpected):
    plan = plan_deploy(make_spec(), observed(nodes, bootstrapped))

    assert [n.name for n in plan.create] == create
    assert [n.name for n in plan.configure] == configure
    assert (plan.bootstrap, plan.fresh, plan.unexpected) == (bootstrap, fresh, unexpected)


def test_plan_for_a_finished_cluster_is_empty_and_says_there_is_nothing_to_do(make_spec):
    plan = plan_deploy(make_spec(), observed(dict.fromkeys(ALL, "running"), True))

    assert plan.empty
    assert plan.describe("lab") == [
        "lab: nothing to do: every declared node exists and is configured"]


def test_undeclared_nodes_are_reported_never_deleted(make_spec):
    extra = {**dict.fromkeys(ALL, "running"), "lab-worker-3": "running"}

    plan = plan_deploy(make_spec(), observed(extra, True))

    assert plan.empty  # reporting an extra node is no reason to act
    assert plan.describe("lab") == [
        "lab: will leave lab-worker-3 alone: beyond what the spec declares"]
    assert not hasattr(plan, "delete")


def test_describe_lists_creates_then_configs_then_bootstrap(make_spec):
    lines = plan_deploy(make_spec(control_planes=1, workers=1),
                        observed({}, False)).describe("lab")

    assert lines == [
        "lab: will create lab-cp-1 (controlplane)",
        "lab: will create lab-worker-1 (worker)",
        "lab: will push machine config to lab-cp-1",
        "lab: will push machine config to lab-worker-1",
        "lab: will bootstrap etcd on the first control plane",
    ]


def test_plan_keeps_the_declared_order_control_planes_first(make_spec):
    declared = make_spec(workers=[{"name": "big", "count": 1}, {"name": "gpu", "count": 2}])

    plan = plan_deploy(declared, observed({}, False))

    assert [n.name for n in plan.create] == [
        "lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-big-1", "lab-gpu-1", "lab-gpu-2"]
    assert [n.pool for n in plan.create] == ["cp", "cp", "cp", "big", "gpu", "gpu"]


def test_bootstrap_alone_makes_a_plan_non_empty():
    assert not DeployPlan(bootstrap=True).empty
    assert DeployPlan(unexpected=["x"]).empty
