"""upgrade-fleet: one upgrade-cluster run per cluster of configs/fleet.yaml, on each site's
deployment, within the fleet's and each site's concurrency limits; then a fleet report."""

from __future__ import annotations

from itertools import chain, zip_longest
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from drover.boundaries import flow_config_path
from drover.errors import DroverError
from drover.fleet import load_fleet
from flows import run_parallel
from tasks.fleet import ensure_concurrency_limits, upgrade_in_fleet


@flow(name="upgrade-fleet")
def upgrade_fleet(fleet: str = "configs/fleet.yaml", talos_version: str | None = None,
                  kubernetes_version: str | None = None, dry_run: bool = False
                  ) -> dict[str, Any]:
    """Upgrade every cluster of a fleet, a few at a time per site and across the fleet.

    Args:
        fleet: path of the fleet YAML, relative to the project (e.g. configs/fleet.yaml)
        talos_version: override the fleet's target Talos version
        kubernetes_version: override the fleet's target Kubernetes version
        dry_run: each cluster's run only prints its plan
    """
    spec = load_fleet(flow_config_path(fleet))
    body = spec.spec
    parameters = {key: value for key, value in {
        "talos_version": talos_version or body.talos_version,
        "kubernetes_version": kubernetes_version or body.kubernetes_version,
        "max_unavailable": body.max_unavailable, "dry_run": dry_run}.items()
        if value is not None}
    ensure_concurrency_limits(spec.concurrency_limits())
    # round-robin over sites, so one busy site does not hold every thread
    order = [pair for pair in chain.from_iterable(zip_longest(*[
        [(site, cluster) for cluster in site.clusters] for site in body.sites])) if pair]
    results = run_parallel(upgrade_in_fleet, {
        f"{site.name}/{cluster}": {"site": site.name, "deployment": site.deployment,
                                   "cluster": cluster, "parameters": parameters}
        for site, cluster in order}, max_workers=min(len(order), 64))
    rows = list(results.values())
    create_table_artifact(rows, key=f"fleet-{spec.metadata.name}",
                          description=", ".join(f"{sum(r['outcome'] == o for r in rows)} {o}"
                                                for o in ("upgraded", "skipped", "failed")))
    failed = [r["cluster"] for r in rows if r["outcome"] == "failed"]
    if failed:
        raise DroverError(f"fleet {spec.metadata.name}: {len(failed)} cluster(s) failed: "
                          f"{', '.join(failed)}; see the fleet-{spec.metadata.name} artifact")
    return {"fleet": spec.metadata.name, "clusters": rows}
