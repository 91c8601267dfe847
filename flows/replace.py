"""replace-node: retire the node (drain; remove its etcd member first for a control plane),
bring up a successor with a fresh name, and delete the old VM only once it is Ready.
Holds the cluster's lease; an etcd snapshot is taken first."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from drover.boundaries import node_name
from flows import known_spec, start_timer
from tasks.configure import prepare_cluster_dir
from tasks.lease import hold_cluster
from tasks.nodes import bring_up_node, delete_nodes, observe_cluster, plan_replacement, retire_node
from tasks.progress import dry_run_name, publish_dry_run
from tasks.recover import snapshot_etcd
from tasks.report import publish_timing


@flow(name="replace-node", flow_run_name=dry_run_name)
def replace_node(cluster: str, node: str, reason: str = "requested", dry_run: bool = False,
                 if_busy: Literal["fail", "wait"] = "fail",
                 wait_seconds: float = 600) -> dict[str, Any]:
    """Replace one node of a cluster with a fresh one (nodes are cattle).

    Args:
        cluster: the cluster's name (metadata.name)
        node: the node to replace, e.g. lab-worker-2
        reason: why, for the record (a health check fills this in)
        dry_run: publish the plan (replace-<cluster>-plan), tag the run dry-run, change nothing
        if_busy: when another operation holds the cluster: fail at once, or wait
        wait_seconds: how long to wait for the cluster when if_busy is wait
    """
    logger = get_run_logger()
    spec = known_spec(cluster)
    node = node_name(cluster, node)
    if dry_run:
        if node not in observe_cluster(spec).nodes:
            publish_dry_run("replace", cluster, [f"{cluster}: {node} is already gone; nothing "
                                                 "to do"])
            return {"cluster": cluster, "replaced": None, "by": None}
        plan = plan_replacement(spec, node)
        for line in plan.describe(cluster):
            logger.info("dry run: %s", line)
        publish_dry_run("replace", cluster, plan.describe(cluster))
        return {"cluster": cluster, "replaced": None, "plan": plan.describe(cluster)}

    with hold_cluster(spec, "replace", if_busy=if_busy, wait_seconds=wait_seconds) as held:
        if node not in observe_cluster(spec).nodes:
            logger.info("%s: %s is already gone (replaced before?); nothing to do", cluster,
                        node)
            return {"cluster": cluster, "replaced": None, "by": None}
        prepare_cluster_dir(spec, nodes_exist=True)  # missing secrets stop it before a drain
        plan = plan_replacement(spec, node)
        logger.info("%s: replacing %s: %s", cluster, node, reason[:200])
        for line in plan.describe(cluster):
            logger.info(line)
        snapshot_etcd(spec)
        timer = start_timer(spec, "replace", {"retire": [node], "bring-up": [plan.new.name],
                                              "delete": [node]})
        try:
            with timer.stage("retire", nodes=[node]):
                retire_node(spec, plan)
            with timer.stage("bring-up", nodes=[plan.new.name]) as stage:
                held.check()
                timer.nodes(stage, {plan.new.name: bring_up_node(
                    spec, plan.new, plan.control_plane, held.info.owner)})
            with timer.stage("delete", nodes=[node]):
                held.check()
                delete_nodes(spec, [node])
        except Exception:
            publish_timing(timer.finish("failed"))
            raise
    verdict = publish_timing(timer.finish("completed"))
    return {"cluster": cluster, "replaced": node, "by": plan.new.name, "verdict": verdict,
            "timing": timer.run.rows()}
