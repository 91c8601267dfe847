"""recover-cluster: restore etcd of a cluster that lost quorum from its latest snapshot, by
Talos's disaster-recovery procedure: wipe the surviving control planes' etcd data, bootstrap
one of them from the snapshot, let the others rejoin. Refuses a cluster whose etcd has quorum.
Holds the cluster's lease. Control planes that are gone stay gone: deploy recreates them."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from drover.parameters import OptionalText, unset_if_empty
from flows import known_spec, start_timer
from tasks.lease import hold_cluster
from tasks.progress import dry_run_name, publish_dry_run
from tasks.recover import perform_recovery, plan_recovery
from tasks.report import publish_timing


@flow(name="recover-cluster", flow_run_name=dry_run_name)
def recover_cluster(cluster: str, snapshot: OptionalText = None, dry_run: bool = False,
                    if_busy: Literal["fail", "wait"] = "fail",
                    wait_seconds: float = 600) -> dict[str, Any]:
    """Bring etcd back after it lost quorum (a majority of control planes dead or deleted).

    Args:
        cluster: the cluster's name (metadata.name)
        snapshot: a snapshot's file name in the cluster's etcd-snapshots folder (default:
            the latest)
        dry_run: publish the plan (recover-<cluster>-plan), tag the run dry-run, change nothing
        if_busy: when another operation holds the cluster: fail at once, or wait
        wait_seconds: how long to wait for the cluster when if_busy is wait
    """
    logger = get_run_logger()
    spec = known_spec(cluster)
    snapshot = unset_if_empty(snapshot)
    if dry_run:
        plan = plan_recovery(spec, snapshot)
        for line in plan.describe():
            logger.info("dry run: %s", line)
        publish_dry_run("recover", cluster, plan.describe())
        return {"cluster": cluster, "recovered": False, "plan": plan.describe()}

    with hold_cluster(spec, "recover", if_busy=if_busy, wait_seconds=wait_seconds):
        plan = plan_recovery(spec, snapshot)
        for line in plan.describe():
            logger.info(line)
        timer = start_timer(spec, "recover", {"recover": None})
        try:
            with timer.stage("recover"):
                members = perform_recovery(spec, plan)
        except Exception:
            publish_timing(timer.finish("failed"))
            raise
    verdict = publish_timing(timer.finish("completed"))
    return {"cluster": cluster, "recovered": True, "members": members, "gone": plan.gone,
            "snapshot": plan.snapshot.name if plan.snapshot else None, "verdict": verdict}
