"""deploy-cluster (`drover apply`, `drover deploy`): converge the cluster to its file.
image → per node, on its own: provision → config push → (first control plane: bootstrap
etcd, once) → surplus nodes removed → config changes applied → rolling upgrade → health
gate → timing report. No node waits for another while coming up. Convergent: a re-run does
only what differs. The whole run holds the cluster's lease; a failed fresh deploy removes
only its own nodes."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from drover.boundaries import flow_config_path
from drover.converge import ApplyPlan
from drover.errors import DowngradeRefused
from drover.parameters import ConfigPath, OptionalText, unset_if_empty
from drover.plan import DeployPlan, Observed
from drover.predict import predicted_line
from drover.spec import ClusterSpec, load_spec, split_node_name
from flows import (
    RunTracker,
    Step,
    run_parallel,
    run_pipelines,
    start_timer,
)
from tasks.apply import plan_apply, reconfigure_node, remove_node
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
from tasks.progress import dry_run_name, publish_dry_run
from tasks.provision import provision_node
from tasks.report import publish_timing
from tasks.upgrade import uncordon_nodes, upgrade_kubernetes, upgrade_node

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


def progress_stages(plan: ApplyPlan, observed: Observed) -> dict[str, list[str] | None]:
    """The run's stages for its progress board, in order: the nodes each goes through, None
    for the cluster's own; a stage with nothing to do is left out."""
    new, upgrade = plan.deploy, plan.upgrade
    kept = [*(n for n in observed.nodes if n not in plan.remove), *(n.name for n in new.create)]
    stages: dict[str, list[str] | None] = {
        "image": None, "provision": [n.name for n in new.create],
        "configure": [n.name for n in new.configure], "bootstrap": None if new.bootstrap else [],
        "remove": list(plan.remove), "reconfigure": [c.node for c in plan.reconfigure],
        "upgrade": [n for batch in upgrade.batches for n in batch] if upgrade else [],
        "kubernetes": None if upgrade and upgrade.kubernetes_version else [],
        "health": list(dict.fromkeys(kept))}
    return {stage: nodes for stage, nodes in stages.items() if nodes != []}


def change_nodes(spec: ClusterSpec, plan: ApplyPlan, image: str, timer: RunTracker) -> None:
    """After the new nodes: remove the surplus (workers in batches, control planes one at a
    time), apply config changes (control planes one at a time, workers in batches), then
    the rolling upgrade; each of these waits for its gate as the upgrade flow's do."""
    budget = spec.spec.upgrade.max_unavailable
    for label, task, calls in (
            ("remove", remove_node, [{"spec": spec, "name": n} for n in plan.remove]),
            ("reconfigure", reconfigure_node,
             [{"spec": spec, "change": c} for c in plan.reconfigure])):
        for batch in batches(spec, calls, budget):
            with timer.stage(f"{label} {' '.join(node_of(c) for c in batch)}"):
                run_parallel(task, {node_of(c): c for c in batch}, len(batch))
    upgrade = plan.upgrade
    if upgrade is None or upgrade.empty:
        return
    uncordon_nodes(spec, upgrade.uncordon)
    for batch in upgrade.batches:
        with timer.stage(f"upgrade {' '.join(batch)}") as stage:
            timer.nodes(stage, run_parallel(upgrade_node, {name: {
                "spec": spec, "name": name, "image": image,
                "talos_version": upgrade.talos_version} for name in batch}, len(batch)))
    if upgrade.kubernetes_version:
        with timer.stage("kubernetes"):
            upgrade_kubernetes(spec, upgrade.kubernetes_version)


def node_of(call: dict[str, Any]) -> str:
    return call["name"] if "name" in call else call["change"].node


def batches(spec: ClusterSpec, calls: list[dict[str, Any]],
            budget: int) -> list[list[dict[str, Any]]]:
    """Control planes one at a time (etcd quorum), then workers `budget` at a time."""
    control = [split_node_name(spec.name, node_of(c))[0] == "cp" for c in calls]
    cps = [[c] for c, cp in zip(calls, control, strict=True) if cp]
    workers = [c for c, cp in zip(calls, control, strict=True) if not cp]
    return cps + [workers[i:i + budget] for i in range(0, len(workers), budget)]


@flow(name="deploy-cluster", flow_run_name=dry_run_name)
def deploy_cluster(config: ConfigPath = "configs/lab.yaml", talos_version: OptionalText = None,
                   kubernetes_version: OptionalText = None, dry_run: bool = False,
                   keep_on_failure: bool = False, allow_downgrade: bool = False,
                   if_busy: Literal["fail", "wait"] = "fail",
                   wait_seconds: float = 600) -> dict[str, Any]:
    """Converge the Talos cluster a config file declares to that file (`drover apply`):
    create missing nodes, remove surplus ones, apply config changes, upgrade versions.

    Args:
        config: path of the cluster YAML under configs/ (e.g. configs/lab.yaml)
        talos_version: override spec.talos.version (e.g. v1.13.9)
        kubernetes_version: override spec.kubernetes.version (e.g. 1.36.3)
        dry_run: publish the diff (apply-<cluster>-diff) and plan (deploy-<cluster>-plan),
            tag the run dry-run and change nothing
        keep_on_failure: keep the nodes of a failed fresh deploy for debugging
        allow_downgrade: allow versions below what the cluster runs
        if_busy: when another operation holds the cluster: fail at once, or wait
        wait_seconds: how long to wait for the cluster when if_busy is wait
    """
    logger = get_run_logger()
    spec = load_spec(flow_config_path(config)).with_overrides(
        unset_if_empty(talos_version), unset_if_empty(kubernetes_version))
    static = check_compliance(spec)  # a weakened control stops the run before anything exists
    if dry_run:
        plan = plan_apply(spec, allow_downgrade, dry_run=True)
        for line in plan.describe(spec.name):
            logger.info("dry run: %s", line)
        publish_dry_run("deploy", spec.name, plan.describe(spec.name))
        return {"cluster": spec.name, "changed": False, "dry_run": True,
                "plan": plan.describe(spec.name), "diff": plan.markdown(spec.name)}

    with hold_cluster(spec, "deploy", if_busy=if_busy, wait_seconds=wait_seconds) as held:
        observed = observe_cluster(spec)
        prepare_cluster_dir(spec, nodes_exist=not observed.empty)
        plan = plan_apply(spec, allow_downgrade)
        for line in plan.describe(spec.name):
            logger.info(line)
        if plan.notes:  # the file is behind the cluster: nothing converges until it says
            raise DowngradeRefused(f"{spec.name}: {'; '.join(plan.notes)}")
        if plan.empty:
            # a run killed after bootstrap left the cluster up but no client configs
            wait_healthy(spec)
            write_client_configs(spec)
            publish_compliance(spec, runtime_compliance(spec, static))
            return {"cluster": spec.name, "changed": False, "dry_run": False,
                    "plan": plan.describe(spec.name)}

        settings = spec.spec.deployment
        timer = start_timer(spec, "deploy", progress_stages(plan, observed))
        run = timer.run
        new = plan.deploy
        try:
            with timer.stage("image"):
                image = resolve_image(spec)
                preflight(spec, new.create, image)
            held.check()
            spans = run_pipelines(node_pipelines(spec, new, image, held.info.owner),
                                  settings.max_parallel)
            timer.pipelines(spans, order=STEPS)
            if new.bootstrap and not any("bootstrap" in steps for steps in spans.values()):
                bootstrap_etcd(spec)  # every control plane was configured by an earlier run
            held.check()
            change_nodes(spec, plan, image, timer)
            with timer.stage("health") as stage:
                timer.nodes(stage, wait_healthy(spec))
            write_client_configs(spec)
        except Exception:
            publish_timing(timer.finish("failed"))
            if new.fresh and not (keep_on_failure or settings.keep_on_failure) \
                    and not held.lost:
                logger.error("%s: fresh deploy failed; removing the nodes it created",
                             spec.name)
                clean_up_failed(spec, held.info.owner)
            raise
    verdict = publish_timing(timer.finish("completed"))
    publish_compliance(spec, runtime_compliance(spec, static))
    predicted = predicted_line(spec.name, run.total)  # what drover predict said, if it ran
    if predicted:
        logger.info("%s: %s", spec.name, predicted)
    return {"cluster": spec.name, "changed": True, "dry_run": False, "verdict": verdict,
            "plan": plan.describe(spec.name), "predicted": predicted,
            "timing": run.rows(), "critical_path": run.critical_path(), "note": run.clock_note}
