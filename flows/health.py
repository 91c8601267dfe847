"""check-health: check every node and the cluster, publish a table, and ask for the
replacement of nodes failing too long (an event an automation turns into replace-node),
unless so many fail at once that replacing would make things worse: then alert."""

from __future__ import annotations

from typing import Any

from prefect import flow

from drover.boundaries import flow_config_path
from drover.spec import load_spec
from flows import known_spec
from tasks.apply import detect_drift
from tasks.health import check_cluster, decide_remediation, emit_unhealthy


@flow(name="check-health")
def check_health(cluster: str, unhealthy_after_seconds: float | None = None,
                 max_unhealthy_percent: int | None = None,
                 config: str | None = None) -> dict[str, Any]:
    """Check a cluster's health and request replacement of nodes that keep failing.

    Args:
        cluster: the cluster's name (metadata.name)
        unhealthy_after_seconds: how long a node must fail before it is replaced
            (default: spec.health.unhealthyAfterSeconds)
        max_unhealthy_percent: above this share of failing nodes, alert and replace none
            (default: spec.health.maxUnhealthyPercent)
        config: the cluster's YAML under configs/ to report drift against (default: what
            drover last applied)
    """
    spec = known_spec(cluster)
    drifted = detect_drift(load_spec(flow_config_path(config)) if config else spec)
    settings = spec.spec.health
    report = check_cluster(spec)
    remediation = decide_remediation(
        spec, report,
        settings.unhealthy_after_seconds if unhealthy_after_seconds is None
        else unhealthy_after_seconds,
        settings.max_unhealthy_percent if max_unhealthy_percent is None
        else max_unhealthy_percent)
    emit_unhealthy(spec, report, remediation)
    return {"cluster": cluster, "unhealthy": [n.node for n in report.unhealthy],
            "replace": remediation.replace, "waiting": remediation.waiting,
            "alert": remediation.alert, "drift": drifted}
