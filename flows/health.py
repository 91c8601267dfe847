"""check-health: check every node and the cluster, publish a table, and ask for the
replacement of nodes failing too long (an event an automation turns into replace-node),
unless so many fail at once that replacing would make things worse: then alert."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Completed, State

from drover.boundaries import cluster_name, flow_config_path
from drover.home import remembered_spec
from drover.parameters import OptionalInt, OptionalNumber, OptionalText, unset_if_empty
from drover.spec import load_spec
from flows import known_list
from tasks.apply import detect_drift
from tasks.health import check_cluster, decide_remediation, emit_unhealthy


@flow(name="check-health")
def check_health(cluster: str, unhealthy_after_seconds: OptionalNumber = None,
                 max_unhealthy_percent: OptionalInt = None,
                 config: OptionalText = None) -> dict[str, Any] | State:
    """Check a cluster's health and request replacement of nodes that keep failing.

    Args:
        cluster: the cluster's name (metadata.name)
        unhealthy_after_seconds: how long a node must fail before it is replaced
            (default: spec.health.unhealthyAfterSeconds)
        max_unhealthy_percent: above this share of failing nodes, alert and replace none
            (default: spec.health.maxUnhealthyPercent)
        config: the cluster's YAML under configs/ to report drift against (default: what
            drover last applied)

    A cluster drover has not deployed (a schedule made before it, or after its destroy) is
    not a failure: the run completes saying nothing is deployed.
    """
    spec = remembered_spec(cluster_name(cluster))
    if spec is None:
        note = f"nothing deployed: {cluster} is not a cluster drover knows ({known_list()})"
        return Completed(message=note, data={"cluster": cluster, "deployed": False,
                                              "note": note, "unhealthy": [], "replace": []})
    config = unset_if_empty(config)
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
    return {"cluster": cluster, "deployed": True, "unhealthy": [n.node for n in report.unhealthy],
            "replace": remediation.replace, "waiting": remediation.waiting,
            "alert": remediation.alert, "drift": drifted}
