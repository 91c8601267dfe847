"""Tasks: the deploy health gate (each node Ready marked on the run's progress board), and
day-2 health checks that emit events for remediation."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from drover import deploy, health, progress
from drover.home import drover_home
from drover.spec import ClusterSpec


@task(name="wait-healthy", cache_policy=NONE)
def wait_healthy(spec: ClusterSpec) -> dict[str, float]:
    """Wait until etcd is full and healthy, the API answers and every node is Ready.

    Returns how many seconds into the wait each node was first seen Ready.
    """
    logger = get_run_logger()
    total = spec.node_count
    board = progress.current()
    marked: set[str] = set()
    planned: list[bool] = []

    def report(state: deploy.Readiness) -> None:
        logger.info("%s: %d/%d nodes Ready; etcd %d/%d healthy; API %s", spec.name,
                    len(state.ready), total, state.health.healthy_members(),
                    spec.spec.control_plane.count, "up" if state.health.api_up else "down")
        if board is None:
            return
        if not planned:  # the nodes there are now: the plan's guess may predate removals
            planned.append(True)
            board.plan("health", [*state.ready, *state.waiting])
            for name in state.waiting:
                board.node(name, "health", "running")
        for name in state.ready:
            if name not in marked:
                marked.add(name)
                board.node(name, "health", "done")

    return deploy.wait_healthy(deploy.Infra.open(spec), report).ready_after


@task(name="check-cluster", cache_policy=NONE)
def check_cluster(spec: ClusterSpec) -> health.ClusterHealthReport:
    report = health.check(deploy.Infra.open(spec))
    create_table_artifact(report.rows(), key=f"health-{spec.name}",
                          description=f"{spec.name}: {len(report.unhealthy)} unhealthy of "
                                      f"{len(report.nodes)} nodes; etcd {report.etcd_healthy}/"
                                      f"{report.control_planes}; API "
                                      f"{'up' if report.api_up else 'down'}")
    return report


@task(name="decide-remediation", cache_policy=NONE)
def decide_remediation(spec: ClusterSpec, report: health.ClusterHealthReport,
                       unhealthy_after: float, max_unhealthy_percent: int) -> health.Remediation:
    now = deploy.Infra.open(spec).clock.now()
    since = health.FailureLog(drover_home() / "health.db").update(
        spec.name, [n.node for n in report.unhealthy], now)
    return health.decide(report, since, now, unhealthy_after, max_unhealthy_percent)


@task(name="emit-unhealthy", cache_policy=NONE)
def emit_unhealthy(spec: ClusterSpec, report: health.ClusterHealthReport,
                   remediation: health.Remediation) -> None:
    """One `drover.node.unhealthy` event per node to replace; an alert event otherwise."""
    logger = get_run_logger()
    problems = {n.node: ", ".join(n.problems()) for n in report.unhealthy}
    for node in remediation.replace:
        emit_event("drover.node.unhealthy",
                   resource={"prefect.resource.id": f"drover.node.{spec.name}.{node}",
                             "drover.cluster": spec.name, "drover.node": node},
                   payload={"cluster": spec.name, "node": node,
                            "reason": f"health check: {problems[node]}"})
        logger.warning("%s: unhealthy (%s): replacement requested", node, problems[node])
    if remediation.alert:
        emit_event("drover.cluster.unhealthy",
                   resource={"prefect.resource.id": f"drover.cluster.{spec.name}",
                             "drover.cluster": spec.name},
                   payload={"cluster": spec.name, "alert": remediation.alert})
        create_markdown_artifact(f"# {spec.name}: not remediating\n\n{remediation.alert}\n",
                                 key=f"health-{spec.name}-alert")
        logger.error(remediation.alert)
