"""Tasks that observe a cluster and remove nodes."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from drover import deploy, replace
from drover.plan import Observed, ReplacePlan
from drover.spec import ClusterSpec, NodeSpec
from tasks import only_transient


@task(name="observe-cluster", cache_policy=NONE)
def observe_cluster(spec: ClusterSpec) -> Observed:
    return deploy.observe(deploy.Infra.open(spec))


@task(name="delete-nodes", cache_policy=NONE)
def delete_nodes(spec: ClusterSpec, names: list[str] | None = None) -> list[str]:
    """Delete the named nodes, or every node of the cluster; absent ones are fine."""
    deleted = deploy.destroy(deploy.Infra.open(spec), names)
    logger = get_run_logger()
    for name in deleted:
        logger.info("%s: deleted", name)
    return deleted


@task(name="clean-up-failed-deploy", cache_policy=NONE)
def clean_up_failed(spec: ClusterSpec, run_id: str) -> list[str]:
    """Delete the nodes this run created (and only those) after its fresh deploy failed."""
    deleted = deploy.clean_up_failed(deploy.Infra.open(spec), run_id)
    get_run_logger().info("%s: removed the %d node(s) this run created: %s", spec.name,
                          len(deleted), ", ".join(deleted) or "none")
    return deleted


@task(name="plan-replacement", cache_policy=NONE)
def plan_replacement(spec: ClusterSpec, node: str) -> ReplacePlan:
    """How to replace `node`; refuses (QuorumError) when etcd would lose quorum."""
    return replace.plan(deploy.Infra.open(spec), node)


@task(name="retire-node", task_run_name="retire-{plan.old}", cache_policy=NONE)
def retire_node(spec: ClusterSpec, plan: ReplacePlan) -> None:
    replace.retire(deploy.Infra.open(spec), plan)
    get_run_logger().info("%s: retired (%s)", plan.old, "drained" if plan.reachable
                          else "unreachable, not drained")


@task(name="bring-up-node", task_run_name="bring-up-{node.name}", cache_policy=NONE,
      retries=2, retry_delay_seconds=5, retry_condition_fn=only_transient)
def bring_up_node(spec: ClusterSpec, node: NodeSpec, control_plane: bool, run_id: str) -> float:
    seconds = replace.bring_up(deploy.Infra.open(spec), node, control_plane, run_id)
    get_run_logger().info("%s: Ready after %.1fs", node.name, seconds)
    return seconds
