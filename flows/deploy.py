"""deploy-cluster: image → provision (parallel) → config push (parallel) → bootstrap etcd
(once) → health gate → timing report. Convergent: a re-run does only what is missing."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from drover.plan import plan_deploy
from drover.spec import load_spec
from flows import run_parallel, start_timer
from tasks.configure import (
    bootstrap_etcd,
    configure_node,
    prepare_cluster_dir,
    write_client_configs,
)
from tasks.health import wait_healthy
from tasks.image import resolve_image
from tasks.nodes import delete_nodes, observe_cluster
from tasks.provision import provision_node
from tasks.report import publish_timing


@flow(name="deploy-cluster")
def deploy_cluster(config: str = "configs/lab.yaml", talos_version: str | None = None,
                   kubernetes_version: str | None = None, dry_run: bool = False,
                   keep_on_failure: bool = False) -> dict[str, Any]:
    """Deploy (or finish deploying) the Talos cluster a config file declares.

    Args:
        config: path of the cluster YAML, relative to the project (e.g. configs/lab.yaml)
        talos_version: override spec.talos.version (e.g. v1.13.9)
        kubernetes_version: override spec.kubernetes.version (e.g. 1.36.3)
        dry_run: print the plan and change nothing
        keep_on_failure: keep the nodes of a failed fresh deploy for debugging
    """
    logger = get_run_logger()
    spec = load_spec(config).with_overrides(talos_version, kubernetes_version)
    plan = plan_deploy(spec, observe_cluster(spec))
    for line in plan.describe(spec.name):
        logger.info(line)
    if dry_run or plan.empty:
        if plan.empty and not dry_run:
            wait_healthy(spec)
        return {"cluster": spec.name, "changed": False, "dry_run": dry_run,
                "plan": plan.describe(spec.name)}

    settings = spec.spec.deployment
    retrying = {"retries": settings.retries, "retry_delay_seconds": settings.retry_delay_seconds}
    timer = start_timer(spec, "deploy")
    run = timer.run
    try:
        prepare_cluster_dir(spec)
        with timer.stage("image"):
            image = resolve_image(spec)
        with timer.stage("provision") as stage:
            timer.nodes(stage, run_parallel(provision_node.with_options(**retrying), {
                n.name: {"spec": spec, "node": n, "image": image} for n in plan.create},
                settings.max_parallel))
        with timer.stage("configure") as stage:
            timer.nodes(stage, run_parallel(configure_node.with_options(**retrying), {
                n.name: {"spec": spec, "node": n} for n in plan.configure},
                settings.max_parallel))
        with timer.stage("bootstrap"):
            if plan.bootstrap:
                bootstrap_etcd(spec)
        with timer.stage("health") as stage:
            timer.nodes(stage, wait_healthy(spec))
        write_client_configs(spec)
    except Exception:
        publish_timing(timer.finish("failed"))
        if plan.fresh and not (keep_on_failure or settings.keep_on_failure):
            logger.error("%s: fresh deploy failed; removing the nodes it created", spec.name)
            delete_nodes(spec)
        raise
    verdict = publish_timing(timer.finish("completed"))
    return {"cluster": spec.name, "changed": True, "dry_run": False, "verdict": verdict,
            "timing": run.rows(), "critical_path": run.critical_path(), "note": run.clock_note}

