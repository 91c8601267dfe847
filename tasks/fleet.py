"""Tasks of a fleet run: concurrency limits, each site's copy of the per-cluster deployment on
the site's own work pool, what an earlier run of the fleet finished, and one cluster's run on
its site's deployment, watched until it ends or its site's worker falls silent."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.futures import PrefectFlowRunFuture
from prefect.states import Crashed

from drover.fleet import Site, heartbeat_check_seconds, site_deployment, site_limit

PAGE = 200  # the API's largest page



@task(name="ensure-concurrency-limits", cache_policy=NONE)
def ensure_concurrency_limits(limits: dict[str, int]) -> None:
    """Create or resize the Prefect global concurrency limits the fleet upgrade holds."""
    with get_client(sync_client=True) as client:
        for name, limit in limits.items():
            client.upsert_global_concurrency_limit_by_name(name, limit)


@task(name="ensure-site-deployments", cache_policy=NONE)
def ensure_site_deployments(sites: list[Site]) -> dict[str, str]:
    """Each site's deployment by site name: for a site with its own work pool, a copy of its
    per-cluster deployment on that pool (created or updated, named <deployment>-<site>)."""
    names: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for site in sites:
            names[site.name] = site_deployment(site)
            if not site.work_pool:
                continue
            try:
                base = client.read_deployment_by_name(site.deployment)
                client.create_deployment(  # an upsert by (flow, name)
                    flow_id=base.flow_id, name=names[site.name].split("/", 1)[1],
                    work_pool_name=site.work_pool, entrypoint=base.entrypoint, path=base.path,
                    pull_steps=base.pull_steps, parameters=base.parameters,
                    parameter_openapi_schema=base.parameter_openapi_schema,
                    enforce_parameter_schema=base.enforce_parameter_schema,
                    job_variables=base.job_variables, description=base.description,
                    tags=[*base.tags, f"site-{site.name}"],
                    concurrency_limit=base.concurrency_limit)
            except Exception as exc:  # this site's clusters fail by name; the others go on
                get_run_logger().error("site %s: no deployment on pool %s (%s: %s); start "
                                       "its worker (drover server start --fleet FILE)",
                                       site.name, site.work_pool, type(exc).__name__, exc)
    return names


@task(name="find-finished-clusters", cache_policy=NONE)
def find_finished_clusters(tag: str) -> dict[str, str]:
    """Clusters an earlier run of this fleet brought to this target: cluster -> flow run id."""
    found: dict[str, str] = {}
    completed = FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]), state=FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.COMPLETED])))
    offset = 0
    with get_client(sync_client=True) as client:
        while page := client.read_flow_runs(flow_run_filter=completed, limit=PAGE,
                                            offset=offset):
            found |= {str(run.parameters.get("cluster")): str(run.id) for run in page}
            offset += len(page)
    return found


#: deployment name -> its work pool, read once per fleet run
POOLS: dict[str, str] = {}


def pool_of(client: SyncPrefectClient, deployment: str) -> str:
    if deployment not in POOLS:
        POOLS[deployment] = client.read_deployment_by_name(deployment).work_pool_name or "-"
    return POOLS[deployment]


#: pool -> (when read, its workers' last heartbeat): a reading under 3 s old is reused by
#: the other clusters of the pool (heartbeats come every 5 s)
LAST_BEATS: dict[str, tuple[float, datetime | None]] = {}


def silent_for(client: SyncPrefectClient, pool: str) -> float:
    """Seconds since any worker of `pool` last sent a heartbeat (inf: none ever did)."""
    read, beat = LAST_BEATS.get(pool, (-1e9, None))
    if time.monotonic() - read > 3:
        beats = [w.last_heartbeat_time for w in client.read_workers_for_work_pool(pool)
                 if w.last_heartbeat_time]
        read, beat = time.monotonic(), max(beats) if beats else None
        LAST_BEATS[pool] = (read, beat)
    return (datetime.now(UTC) - beat).total_seconds() if beat else float("inf")


def row(site: str, cluster: str, wave: int, outcome: str, detail: str,
        flow_run: str = "-") -> dict[str, str]:
    return {"site": site, "cluster": cluster, "wave": str(wave), "outcome": outcome,
            "detail": detail, "flow_run": flow_run}


@task(name="upgrade-in-fleet", task_run_name="fleet-{site}-{cluster}", cache_policy=NONE)
def upgrade_in_fleet(site: str, deployment: str, cluster: str, parameters: dict[str, Any],
                     wave: int = 1, tags: list[str] | None = None,
                     worker_timeout: float = 90) -> dict[str, str]:
    """Run the site's deployment for one cluster, holding a fleet slot and a site slot; the
    outcome is upgraded, skipped (already current), failed (its run failed), or not done:
    the site's worker fell silent (its run is then marked Crashed, so a re-run starts it
    afresh), or the run could not be started or followed (no slot, no deployment, a server
    error)."""
    logger = get_run_logger()
    run: FlowRun | None = None
    try:
        with concurrency(["drover-fleet", site_limit(site)], occupy=1, strict=True), \
                get_client(sync_client=True) as client:
            pool = pool_of(client, deployment)
            if (silence := silent_for(client, pool)) > worker_timeout:
                return row(site, cluster, wave, "not done",
                           f"no live worker on pool {pool} (silent {silence:.0f}s); not started")
            logger.info("%s/%s: running %s on pool %s", site, cluster, deployment, pool)
            # by name: three API calls (by id, run_deployment reads the flow too); its own
            # tracking task run is the run's parent, so it shows under the fleet run
            run = run_deployment(deployment, parameters={"cluster": cluster, **parameters},
                                 timeout=0, tags=tags or [])
            future = PrefectFlowRunFuture(run.id)
            # woken by the run's final-state event (one websocket for the whole fleet
            # flow); between events, every few seconds, is the site's worker still there?
            while True:
                future.wait(timeout=heartbeat_check_seconds(worker_timeout))
                if (state := future.state).is_final():
                    break
                if (silence := silent_for(client, pool)) > worker_timeout:
                    why = (f"worker of pool {pool} silent {silence:.0f}s while the run was "
                           f"{state.name}; marked Crashed, re-run the fleet to finish it")
                    client.set_flow_run_state(run.id, Crashed(message=why), force=True)
                    logger.error("%s/%s: not done: %s", site, cluster, why)
                    return row(site, cluster, wave, "not done", why, str(run.id))
    except Exception as exc:  # no slot, no deployment, a server answering 503: not the
        # cluster's failure (not counted against the error budget), but not done either
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
        why = (f"lost track of its run ({error}); re-run the fleet" if run
               else f"could not start {deployment} ({error})")
        logger.error("%s/%s: not done: %s", site, cluster, why)
        return row(site, cluster, wave, "not done", why, str(run.id) if run else "-")
    message = state.message or ""
    if not state.is_completed():
        outcome = "failed"
    else:
        outcome = "skipped" if message.startswith("skipped") else "upgraded"
    logger.info("%s/%s: %s", site, cluster, outcome)
    return row(site, cluster, wave, outcome, message or state.name, str(run.id))
