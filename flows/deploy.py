"""deploy-cluster: image → per node, on its own: provision → config push → (first control
plane: bootstrap etcd, once) → join → health gate → timing report. No node waits for
another. Convergent: a re-run does only what is missing. The whole run holds the cluster's
lease; a failed fresh deploy removes only its own nodes."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from drover.boundaries import flow_config_path
from drover.plan import DeployPlan, plan_deploy
from drover.spec import ClusterSpec, load_spec
from flows import Step, run_pipelines, start_timer
from tasks.compliance import check_compliance, publish_compliance, runtime_compliance
from tasks.configure import (
    bootstrap_etcd,
    configure_node,
    prepare_cluster_dir,
    write_client_configs,
)
from tasks.health import wait_healthy
from tasks.image import preflight, resolve_image
from tasks.lease import hold_cluster
from tasks.nodes import clean_up_failed, observe_cluster
from tasks.provision import provision_node
from tasks.report import publish_timing

STEPS = ["provision", "configure", "bootstrap"]


def node_pipelines(spec: ClusterSpec, plan: DeployPlan, image: str,
                   run_id: str) -> dict[str, list[Step]]:
    """Each node's own chain: provision (if missing) → configure (if not yet) → bootstrap etcd
    (the first control plane to get there, if the cluster was never bootstrapped). Joining
    is the health gate's, which waits for every node Ready and etcd full."""
    settings = spec.spec.deployment
    retrying = {"retries": settings.retries, "retry_delay_seconds": settings.retry_delay_seconds}
    create = {n.name for n in plan.create}
    chains: dict[str, list[Step]] = {}
    for node in plan.configure:
        chain = [Step("provision", provision_node.with_options(**retrying), {
            "spec": spec, "node": node, "image": image, "run_id": run_id})] \
            if node.name in create else []
        chain.append(Step("configure", configure_node.with_options(**retrying),
                          {"spec": spec, "node": node}))
        if plan.bootstrap and node.role == "controlplane":
            chain.append(Step("bootstrap", bootstrap_etcd, {"spec": spec}, once="bootstrap"))
        chains[node.name] = chain
    return chains


@flow(name="deploy-cluster")
def deploy_cluster(config: str = "configs/lab.yaml", talos_version: str | None = None,
                   kubernetes_version: str | None = None, dry_run: bool = False,
                   keep_on_failure: bool = False, if_busy: Literal["fail", "wait"] = "fail",
                   wait_seconds: float = 600) -> dict[str, Any]:
    """Deploy (or finish deploying) the Talos cluster a config file declares.

    Args:
        config: path of the cluster YAML under configs/ (e.g. configs/lab.yaml)
        talos_version: override spec.talos.version (e.g. v1.13.9)
        kubernetes_version: override spec.kubernetes.version (e.g. 1.36.3)
        dry_run: print the plan and change nothing
        keep_on_failure: keep the nodes of a failed fresh deploy for debugging
        if_busy: when another operation holds the cluster: fail at once, or wait
        wait_seconds: how long to wait for the cluster when if_busy is wait
    """
    logger = get_run_logger()
    spec = load_spec(flow_config_path(config)).with_overrides(talos_version, kubernetes_version)
    static = check_compliance(spec)  # a weakened control stops the run before anything exists
    if dry_run:
        plan = plan_deploy(spec, observe_cluster(spec))
        for line in plan.describe(spec.name):
            logger.info("dry run: %s", line)
        return {"cluster": spec.name, "changed": False, "dry_run": True,
                "plan": plan.describe(spec.name)}

    with hold_cluster(spec, "deploy", if_busy=if_busy, wait_seconds=wait_seconds) as held:
        observed = observe_cluster(spec)
        plan = plan_deploy(spec, observed)
        for line in plan.describe(spec.name):
            logger.info(line)
        prepare_cluster_dir(spec, nodes_exist=not observed.empty)
        if plan.empty:
            # a run killed after bootstrap left the cluster up but no client configs
            wait_healthy(spec)
            write_client_configs(spec)
            publish_compliance(spec, runtime_compliance(spec, static))
            return {"cluster": spec.name, "changed": False, "dry_run": False,
                    "plan": plan.describe(spec.name)}

        settings = spec.spec.deployment
        timer = start_timer(spec, "deploy")
        run = timer.run
        try:
            with timer.stage("image"):
                image = resolve_image(spec)
                preflight(spec, plan.create, image)
            held.check()
            spans = run_pipelines(node_pipelines(spec, plan, image, held.info.owner),
                                  settings.max_parallel)
            timer.pipelines(spans, order=STEPS)
            if plan.bootstrap and not any("bootstrap" in steps for steps in spans.values()):
                bootstrap_etcd(spec)  # every control plane was configured by an earlier run
            with timer.stage("health") as stage:
                timer.nodes(stage, wait_healthy(spec))
            write_client_configs(spec)
        except Exception:
            publish_timing(timer.finish("failed"))
            if plan.fresh and not (keep_on_failure or settings.keep_on_failure) \
                    and not held.lost:
                logger.error("%s: fresh deploy failed; removing the nodes it created",
                             spec.name)
                clean_up_failed(spec, held.info.owner)
            raise
    verdict = publish_timing(timer.finish("completed"))
    publish_compliance(spec, runtime_compliance(spec, static))
    return {"cluster": spec.name, "changed": True, "dry_run": False, "verdict": verdict,
            "timing": run.rows(), "critical_path": run.critical_path(), "note": run.clock_note}
