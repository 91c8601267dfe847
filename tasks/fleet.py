"""Tasks of a fleet upgrade: concurrency limits, and one cluster's upgrade run."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment

from drover.fleet import site_limit


@task(name="ensure-concurrency-limits", cache_policy=NONE)
def ensure_concurrency_limits(limits: dict[str, int]) -> None:
    """Create or resize the Prefect global concurrency limits the fleet upgrade holds."""
    with get_client(sync_client=True) as client:
        for name, limit in limits.items():
            client.upsert_global_concurrency_limit_by_name(name, limit)


@task(name="upgrade-in-fleet", task_run_name="fleet-{site}-{cluster}", cache_policy=NONE)
def upgrade_in_fleet(site: str, deployment: str, cluster: str,
                     parameters: dict[str, Any]) -> dict[str, str]:
    """Run the site's upgrade-cluster deployment for one cluster, holding a fleet slot and a
    site slot; the outcome is upgraded, skipped (already current) or failed."""
    logger = get_run_logger()
    try:
        with concurrency(["drover-fleet", site_limit(site)], occupy=1, strict=True):
            logger.info("%s/%s: upgrading through %s", site, cluster, deployment)
            run = run_deployment(deployment, parameters={"cluster": cluster, **parameters},
                                 timeout=None, poll_interval=2)
    except Exception as exc:  # a missing deployment, a lost server: this cluster failed
        logger.error("%s/%s: could not run %s: %s", site, cluster, deployment, exc)
        return {"site": site, "cluster": cluster, "outcome": "failed", "detail": str(exc),
                "flow_run": "-"}
    state = run.state
    message = (state.message if state else None) or ""
    if state is None or not state.is_completed():
        outcome = "failed"
    else:
        outcome = "skipped" if message.startswith("skipped") else "upgraded"
    logger.info("%s/%s: %s", site, cluster, outcome)
    return {"site": site, "cluster": cluster, "outcome": outcome,
            "detail": message or (state.name if state else "no state"), "flow_run": str(run.id)}
