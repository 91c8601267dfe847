"""upgrade-fleet: one run of each site's per-cluster deployment for every cluster of
configs/fleet.yaml, in canary waves, within the fleet's and each site's concurrency limits;
a wave over the error budget stops the run; then a fleet report."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from drover.boundaries import flow_config_path
from drover.errors import DroverError
from drover.fleet import (
    fleet_order,
    load_fleet,
    over_budget,
    split_waves,
    summarize,
    target_tag,
    untouched_rows,
    wave_threads,
)
from flows import run_parallel
from tasks.fleet import (
    ensure_concurrency_limits,
    ensure_site_deployments,
    find_finished_clusters,
    upgrade_in_fleet,
)


@flow(name="upgrade-fleet")
def upgrade_fleet(fleet: str = "configs/fleet.yaml", talos_version: str | None = None,
                  kubernetes_version: str | None = None, dry_run: bool = False,
                  resume: bool = True) -> dict[str, Any]:
    """Upgrade every cluster of a fleet in canary waves, a few at a time per site and across
    the fleet; a wave with more failures than the error budget stops the run.

    Args:
        fleet: path of the fleet YAML, relative to the project (e.g. configs/fleet.yaml)
        talos_version: override the fleet's target Talos version
        kubernetes_version: override the fleet's target Kubernetes version
        dry_run: each cluster's run only prints its plan
        resume: skip the clusters an earlier run of this fleet brought to the same target
    """
    spec = load_fleet(flow_config_path(fleet))
    body, name = spec.spec, spec.metadata.name
    parameters = {key: value for key, value in {
        "talos_version": talos_version or body.talos_version,
        "kubernetes_version": kubernetes_version or body.kubernetes_version,
        "max_unavailable": body.max_unavailable, "dry_run": dry_run}.items()
        if value is not None}
    ensure_concurrency_limits(spec.concurrency_limits())
    deployments = ensure_site_deployments(body.sites)
    tag = target_tag(name, parameters)
    done = find_finished_clusters(tag) if resume and not dry_run else {}
    rows = [{"site": s.name, "cluster": c, "wave": "-", "outcome": "done earlier",
             "detail": "an earlier run of this fleet finished it", "flow_run": done[c]}
            for s, c in fleet_order(body.sites) if c in done]
    waves = split_waves([(s, c) for s, c in fleet_order(body.sites) if c not in done],
                        body.rollout.waves)
    for number, wave in enumerate(waves, 1):
        results = list(run_parallel(upgrade_in_fleet, {f"{site.name}/{cluster}": {
            "site": site.name, "deployment": deployments[site.name], "cluster": cluster,
            "parameters": parameters, "wave": number, "tags": [] if dry_run else [tag],
            "worker_timeout": body.rollout.worker_timeout_seconds}
            for site, cluster in wave}, max_workers=wave_threads(len(wave), body.limits)).values())
        rows += results
        failed = [r for r in results if r["outcome"] == "failed"]
        if over_budget(len(failed), len(wave), body.rollout.error_budget):
            why = (f"wave {number} had {len(failed)} failed of {len(wave)}, over the error "
                   f"budget of {body.rollout.error_budget}")
            for later, pairs in enumerate(waves[number:], number + 1):
                rows += untouched_rows(pairs, later, f"not started: {why}")
            break
    create_table_artifact(rows, key=f"fleet-{name}", description=summarize(rows))
    unfinished = [r for r in rows if r["outcome"] in ("failed", "not done", "untouched")]
    if unfinished:
        raise DroverError(f"fleet {name}: {summarize(rows)}. " + "; ".join(
            f"{r['cluster']} {r['outcome']}: {r['detail']}" for r in unfinished
            if r["outcome"] != "untouched")[:2000]
            + f". See the fleet-{name} artifact; a re-run does only what is left")
    return {"fleet": name, "clusters": rows}
