"""upgrade-cluster: control planes one at a time, then workers in a sliding window of
max_unavailable (cordon → drain → upgrade → Ready → uncordon; the next worker starts the
moment one ends, not batch by batch), then Kubernetes.
Holds the cluster's lease; an etcd snapshot is taken first. A failed node stops the run;
a re-run continues where it stopped. A lower version is refused unless allowed."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed

from drover.errors import NodeFailed
from drover.parameters import OptionalInt, OptionalText, unset_if_empty
from drover.plan import UpgradePlan, plan_upgrade, refuse_downgrade
from drover.spec import ClusterSpec
from flows import known_spec, run_parallel, start_timer
from tasks.apply import record_overrides
from tasks.compliance import check_compliance, publish_compliance, runtime_compliance
from tasks.configure import prepare_cluster_dir
from tasks.image import resolve_image
from tasks.lease import hold_cluster
from tasks.nodes import observe_cluster
from tasks.progress import dry_run_name, publish_dry_run
from tasks.recover import snapshot_etcd
from tasks.report import publish_timing
from tasks.upgrade import uncordon_nodes, upgrade_kubernetes, upgrade_node


def plan_for(spec: ClusterSpec, target: ClusterSpec, max_unavailable: int | None,
             allow_downgrade: bool) -> tuple[UpgradePlan, list[str]]:
    """The plan, and the control planes among its nodes (upgraded one at a time)."""
    observed = observe_cluster(spec)
    versions = target.spec
    refuse_downgrade(spec.name, observed, versions.talos.version, versions.kubernetes.version,
                     allow_downgrade)
    plan = plan_upgrade(observed, versions.talos.version, versions.kubernetes.version,
                        max_unavailable or spec.spec.upgrade.max_unavailable)
    return plan, [n.name for n in observed.nodes.values() if n.role == "controlplane"]


@flow(name="upgrade-cluster", flow_run_name=dry_run_name)
def upgrade_cluster(cluster: str, talos_version: OptionalText = None,
                    kubernetes_version: OptionalText = None, max_unavailable: OptionalInt = None,
                    dry_run: bool = False, allow_downgrade: bool = False,
                    if_busy: Literal["fail", "wait"] = "fail",
                    wait_seconds: float = 600) -> dict[str, Any]:
    """Roll a cluster to a Talos and/or Kubernetes version without risking etcd quorum.

    Args:
        cluster: the cluster's name (metadata.name)
        talos_version: target Talos version, e.g. v1.14.0 (default: the deployed spec's)
        kubernetes_version: target Kubernetes version, e.g. 1.37.0 (after Talos, like upgrade-k8s)
        max_unavailable: workers upgraded at once (default: spec.upgrade.maxUnavailable)
        dry_run: publish the plan (upgrade-<cluster>-plan), tag the run dry-run, change nothing
        allow_downgrade: allow a target below what the nodes run
        if_busy: when another operation holds the cluster: fail at once, or wait
        wait_seconds: how long to wait for the cluster when if_busy is wait
    """
    logger = get_run_logger()
    spec = known_spec(cluster)
    talos_version = unset_if_empty(talos_version)
    kubernetes_version = unset_if_empty(kubernetes_version)
    target = spec.with_overrides(talos_version, kubernetes_version)
    if dry_run:
        plan, _ = plan_for(spec, target, max_unavailable, allow_downgrade)
        for line in plan.describe(cluster):
            logger.info("dry run: %s", line)
        publish_dry_run("upgrade", cluster, plan.describe(cluster))
        return {"cluster": cluster, "changed": False, "plan": plan.describe(cluster)}

    with hold_cluster(spec, "upgrade", if_busy=if_busy, wait_seconds=wait_seconds) as held:
        prepare_cluster_dir(spec, nodes_exist=True)  # missing secrets stop it here, first
        plan, control_planes = plan_for(spec, target, max_unavailable, allow_downgrade)
        for line in plan.describe(cluster):
            logger.info(line)
        if plan.not_running and not plan.empty:
            raise NodeFailed(f"{plan.not_running[0]}: upgrade pre-flight: not running "
                             f"({', '.join(plan.not_running)}); replace or repair it first; "
                             "nothing was touched")
        if plan.empty:  # the message tells a fleet run this cluster was already current
            return Completed(message=f"skipped: {plan.describe(cluster)[0]}", data={
                "cluster": cluster, "changed": False, "plan": plan.describe(cluster)})

        static = check_compliance(target)
        snapshot_etcd(spec)
        order = [name for batch in plan.batches for name in batch]
        timer = start_timer(spec, "upgrade", {"image": None, "upgrade": order, **(
            {"kubernetes": None} if plan.kubernetes_version else {})})
        done: list[str] = []

        def node_call(name: str) -> dict[str, Any]:
            return {"spec": spec, "name": name, "image": image,
                    "talos_version": plan.talos_version}

        try:
            uncordon_nodes(spec, plan.uncordon)
            with timer.stage("image"):
                image = resolve_image(target)
            workers = [name for name in order if name not in control_planes]
            for name in [n for n in order if n in control_planes]:  # etcd: one at a time
                held.check()
                with timer.stage(f"upgrade {name}") as stage:
                    timer.nodes(stage, run_parallel(upgrade_node, {name: node_call(name)}, 1))
                done.append(name)
            if workers:
                window = max_unavailable or spec.spec.upgrade.max_unavailable
                with timer.stage(f"upgrade workers ({window} at a time)") as stage:
                    timer.nodes(stage, run_parallel(
                        upgrade_node, {name: node_call(name) for name in workers}, window,
                        stop_on_failure=True, before_start=held.check,
                        on_result=lambda name, _: done.append(name)))
            if plan.kubernetes_version:
                with timer.stage("kubernetes"):
                    upgrade_kubernetes(spec, plan.kubernetes_version)
        except Exception as exc:
            untouched = [n for batch in plan.batches for n in batch if n not in done]
            report = (f"# upgrade {cluster} stopped\n\n**{exc}**\n\n- upgraded: "
                      f"{', '.join(done) or 'none'}\n- stopped at or not reached: "
                      f"{', '.join(untouched)}\n\nRe-run to continue from here.\n")
            create_markdown_artifact(report, key=f"upgrade-{cluster}-report")
            publish_timing(timer.finish("failed"))
            raise
        prepare_cluster_dir(target, nodes_exist=True)  # later runs use the new versions
        record_overrides(cluster, talos_version, kubernetes_version)
    verdict = publish_timing(timer.finish("completed"))
    publish_compliance(target, runtime_compliance(target, static))
    return {"cluster": cluster, "changed": True, "upgraded": done, "verdict": verdict,
            "timing": timer.run.rows()}
