"""Tasks of `drover apply`: the plan and its diff, removing surplus nodes, config changes."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from drover import apply
from drover.converge import ApplyPlan, NodeChange
from drover.deploy import Infra
from drover.spec import ClusterSpec
from tasks import Span, only_transient, span


@task(name="plan-apply", cache_policy=NONE)
def plan_apply(spec: ClusterSpec, allow_downgrade: bool = False, dry_run: bool = False
               ) -> ApplyPlan:
    """What differs between the file and the cluster; published as apply-<cluster>-diff."""
    plan = apply.plan(Infra.open(spec), allow_downgrade)
    title = "dry run: " if dry_run else ""
    create_markdown_artifact(plan.markdown(spec.name), key=f"apply-{spec.name}-diff",
                             description=f"{title}{plan.describe(spec.name)[0]}")
    return plan


@task(name="remove-node", task_run_name="remove-{name}", cache_policy=NONE, retries=1,
      retry_delay_seconds=5, retry_condition_fn=only_transient)
def remove_node(spec: ClusterSpec, name: str) -> Span:
    """Drain and delete a node beyond the file's count (a control plane: etcd member first)."""
    infra = Infra.open(spec)
    started = infra.clock.now()
    apply.remove_node(infra, name)
    get_run_logger().info("%s: removed (beyond the file's count)", name)
    return span(infra, infra.clock.now() - started)


@task(name="reconfigure-node", task_run_name="reconfigure-{change.node}", cache_policy=NONE,
      retries=1, retry_delay_seconds=5, retry_condition_fn=only_transient)
def reconfigure_node(spec: ClusterSpec, change: NodeChange) -> Span:
    """Apply the node's changed machine config, rebooting it only when Talos must."""
    infra = Infra.open(spec)
    seconds = apply.reconfigure_node(infra, change)
    get_run_logger().info("%s: %d config change(s) applied (%s) after %.1fs", change.node,
                          len(change.changes), "rebooted" if change.reboot else "no reboot",
                          seconds)
    return span(infra, seconds)


@task(name="record-overrides", cache_policy=NONE)
def record_overrides(cluster: str, talos_version: str | None,
                     kubernetes_version: str | None) -> None:
    """Remember versions set by `drover upgrade` rather than by the file, so a later apply of
    the unchanged file says the file is behind instead of "nothing to do"."""
    for field, value in (("spec.talos.version", talos_version),
                         ("spec.kubernetes.version", kubernetes_version)):
        if value:
            apply.record_override(cluster, field, value, f"drover upgrade ({field} {value})")


@task(name="detect-drift", cache_policy=NONE)
def detect_drift(spec: ClusterSpec) -> dict[str, list[str]]:
    """Nodes whose running versions or config differ from `spec` (the file), by field;
    published as drift-<cluster> when there is any."""
    drifted = apply.drift(Infra.open(spec))
    logger = get_run_logger()
    for node, fields in drifted.items():
        for line in fields:
            logger.warning("%s: drift: %s", node, line)
    if drifted:
        rows = "\n".join(f"| {node} | {line} |" for node, lines in drifted.items()
                         for line in lines)
        create_markdown_artifact(f"# drift {spec.name}\n\n| node | differs |\n|---|---|\n"
                                 f"{rows}\n", key=f"drift-{spec.name}",
                                 description=f"{len(drifted)} node(s) differ from the file")
    return drifted
