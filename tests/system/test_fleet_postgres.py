"""The fleet at production shape: `drover server start --postgres` (a real PostgreSQL, a real
Prefect server on it), a work pool and worker per site, the upgrade-fleet deployment run the
way the UI runs it. 30 lab clusters converge within the limits; a canary wave with a planted
failure stops the run with later waves untouched; a site whose worker is killed mid-run has
its clusters reported not done, and a re-run finishes only those."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from drover import server
from drover.providers.lab import open_datacenter
from drover.spec import load_spec
from tests.system.conftest import REPO, finished_run, lab_cluster, wait_for
from tests.system.test_day2_automation import overlap

SITES = ("ams", "fra", "par")
TARGET = "v1.14.0"


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """drover server start --postgres with a worker on each site's pool; the module's own
    DROVER_HOME and config root, which the workers inherit."""
    home = tmp_path_factory.mktemp("fleet-home")
    configs = tmp_path_factory.mktemp("fleet-configs")
    saved = {k: os.environ.get(k) for k in ("DROVER_HOME", "DROVER_CONFIG_ROOT",
                                            "PREFECT_API_URL")}
    os.environ.update(DROVER_HOME=str(home / "drover"), DROVER_CONFIG_ROOT=str(configs))
    os.environ.pop("PREFECT_API_URL", None)
    try:
        state = server.start(REPO, use_postgres=True,
                             site_pools=[f"pool-{site}" for site in SITES])
        assert state["running"] and state["database"] == "postgresql", state
        with httpx.Client(base_url=state["url"], timeout=30) as api:
            for name in ("check-health/check-health", "upgrade-fleet/upgrade-fleet"):
                deployment = api.get(f"/deployments/name/{name}").json()
                api.patch(f"/deployments/{deployment['id']}", json={"paused": True})
        yield {**state, "configs": configs}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_fleet(folder: Path, name: str, sites: dict[str, list[str]], **rollout: Any) -> str:
    path = folder / f"fleet-{name}.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "drover/v1alpha1", "kind": "Fleet", "metadata": {"name": name},
        "spec": {"talosVersion": TARGET, "limits": {"fleet": 4, "perSite": 2},
                 "rollout": rollout,
                 "sites": [{"name": site, "workPool": f"pool-{site}", "clusters": clusters}
                           for site, clusters in sites.items()]}}))
    return str(path)


def run_fleet(state: dict[str, Any], fleet: str) -> tuple[dict, list[dict], list[dict]]:
    """Start upgrade-fleet through the API and wait: its run, its report rows, and the
    per-cluster runs it started (each with its deployment's name)."""
    with httpx.Client(base_url=state["url"], timeout=30) as api:
        deployment = api.get("/deployments/name/upgrade-fleet/upgrade-fleet").json()
        run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                       json={"parameters": {"fleet": fleet}}).json()
        run = finished_run(api, run["id"], timeout=400)
        artifacts = api.post("/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
        report = next((a for a in artifacts if (a["key"] or "").startswith("fleet-")), None)
        assert report, f"no fleet report: {run['state']}"
        children = api.post("/flow_runs/filter", json={
            "flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}}).json()
        names = {d["id"]: d["name"] for d in api.post("/deployments/filter", json={}).json()}
    for child in children:
        child["deployment"] = names.get(child["deployment_id"])
    return run, json.loads(report["data"]), children


def clusters(prefix: str, per_site: int, slow: str = "") -> dict[str, list[str]]:
    """Lab clusters (1 + 1) for each site, deployed; the `slow` site's take real seconds to
    upgrade (demo profile on the wall clock), the others none (instant, virtual clock)."""
    sites = {site: [f"{prefix}{site[0]}{i}" for i in range(1, per_site + 1)] for site in SITES}
    for site, names in sites.items():
        provider = {"profile": "demo", "clock": "system", "compression": 3.0} \
            if site == slow else {}
        for name in names:
            lab_cluster(Path(os.environ["DROVER_CONFIG_ROOT"]), name, **provider)
    return sites


def versions(name: str) -> set[str | None]:
    config = Path(os.environ["DROVER_CONFIG_ROOT"]) / f"{name}.yaml"
    return {n.talos_version for n in open_datacenter(load_spec(config)).nodes()}


def test_thirty_clusters_converge_over_three_site_pools_in_waves_within_the_limits(
        fleet_server: dict[str, Any]) -> None:
    sites = clusters("c", 10)
    fleet = write_fleet(fleet_server["configs"], "thirty", sites, waves=[1, "10%"])

    run, rows, children = run_fleet(fleet_server, fleet)

    assert run["state"]["type"] == "COMPLETED", run["state"].get("message")
    assert sorted(r["cluster"] for r in rows) == sorted(sum(sites.values(), []))
    assert {r["outcome"] for r in rows} == {"upgraded"}
    assert [sum(r["wave"] == w for r in rows) for w in "123"] == [1, 3, 26]
    assert len(children) == 30 and {c["state"]["type"] for c in children} == {"COMPLETED"}
    assert overlap(children) <= 4
    for site, names in sites.items():
        mine = [c for c in children if c["parameters"]["cluster"] in names]
        assert {c["deployment"] for c in mine} == {f"upgrade-cluster-{site}"}
        assert overlap(mine) <= 2
    wave_of = {r["cluster"]: int(r["wave"]) for r in rows}
    for wave in (1, 2):  # a wave starts only when the one before has ended
        ended = max(c["end_time"] for c in children if wave_of[c["parameters"]["cluster"]]
                    == wave)
        started = min(c["start_time"] for c in children if wave_of[c["parameters"]["cluster"]]
                      == wave + 1)
        assert datetime.fromisoformat(ended) <= datetime.fromisoformat(started)
    assert all(versions(name) == {TARGET} for name in sum(sites.values(), []))


def test_a_failed_canary_wave_stops_the_run_and_leaves_later_waves_untouched(
        fleet_server: dict[str, Any]) -> None:
    sites = clusters("w", 2)
    sites["fra"].insert(0, "ghost")  # planted: drover knows no cluster called ghost
    fleet = write_fleet(fleet_server["configs"], "canary", sites, waves=[1, 2])

    run, rows, children = run_fleet(fleet_server, fleet)

    assert run["state"]["type"] == "FAILED"
    assert "ghost failed" in run["state"]["message"]
    by_cluster = {r["cluster"]: r for r in rows}
    assert by_cluster["wa1"]["outcome"] == "upgraded" and by_cluster["wa1"]["wave"] == "1"
    assert by_cluster["ghost"]["outcome"] == "failed"
    assert "no such cluster" in by_cluster["ghost"]["detail"]
    # round-robin order wa1 | ghost wp1 | wa2 wf1 wp2 wf2: waves of 1, 2, then the rest
    assert by_cluster["wp1"]["wave"] == "2"
    untouched = {c for c, r in by_cluster.items() if r["outcome"] == "untouched"}
    assert untouched == {"wa2", "wf1", "wp2", "wf2"}
    assert all("wave 2 had 1 failed" in by_cluster[c]["detail"] for c in untouched)
    started = {c["parameters"]["cluster"] for c in children}
    assert not started & untouched
    assert all(versions(name) != {TARGET} for name in untouched)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the flow runs a process worker started in their own
    sessions), read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_a_killed_site_worker_leaves_its_clusters_not_done_and_a_rerun_finishes_them(
        fleet_server: dict[str, Any]) -> None:
    sites = clusters("k", 2, slow="par")
    fleet = write_fleet(fleet_server["configs"], "killed", sites, waves=[],
                        workerTimeoutSeconds=15)
    worker = fleet_server["workers"]["pool-par"]["pid"]

    with httpx.Client(base_url=fleet_server["url"], timeout=30) as api:
        def par_running() -> bool:
            runs = api.post("/flow_runs/filter", json={"flow_runs": {
                "state": {"type": {"any_": ["RUNNING"]}},
                "tags": {"all_": ["drover-fleet/killed/" + TARGET + "-same"]}}}).json()
            return any(r["parameters"]["cluster"] in sites["par"] for r in runs)

        killer = threading.Thread(target=lambda: (
            wait_for(par_running, 300, "a par cluster's run to start"),
            [os.kill(p, signal.SIGKILL) for p in [worker, *descendants(worker)]]))
        killer.start()
        run, rows, _ = run_fleet(fleet_server, fleet)
        killer.join()

    assert run["state"]["type"] == "FAILED"
    outcomes = {r["cluster"]: r["outcome"] for r in rows}
    assert {outcomes[c] for c in sites["par"]} == {"not done"}
    assert all(outcomes[c] == "upgraded" for s in ("ams", "fra") for c in sites[s])
    assert "worker of pool pool-par silent" in next(
        r["detail"] for r in rows if r["cluster"] in sites["par"] and r["flow_run"] != "-")

    assert server.start(REPO, site_pools=[f"pool-{site}" for site in SITES])["workers"][
        "pool-par"]["alive"]  # the server runs on: only the dead worker is started again
    rerun, rows, children = run_fleet(fleet_server, fleet)

    assert rerun["state"]["type"] == "COMPLETED", rerun["state"].get("message")
    outcomes = {r["cluster"]: r["outcome"] for r in rows}
    assert {outcomes[c] for c in sites["par"]} == {"upgraded"}
    assert all(outcomes[c] == "done earlier" for s in ("ams", "fra") for c in sites[s])
    assert sorted(c["parameters"]["cluster"] for c in children) == sorted(sites["par"])
    assert all(versions(name) == {TARGET} for name in sum(sites.values(), []))
