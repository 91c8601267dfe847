"""Benchmark: the fleet upgrade at full scale on drover's own Prefect server.

N lab clusters (3 control planes + 2 workers) over S sites, each site with its own work pool
and process worker, upgraded by the upgrade-fleet deployment in its canary waves, once with
the server on PostgreSQL and once on SQLite. Per database it prints the fleet's wall time
against the ideal its limits allow (per wave, the larger of: the cluster runs' time spread over
the fleet limit, one site's over its per-site limit, the longest run; from the runs' own start
and end times in the API), the cluster flow runs per minute the server sustained, and the API
latency (a flow-run query, every 0.5 s during the run) p50/p95.

The lab profile and clock are flags (default: instant profile, virtual clock: the upgrades
themselves take no time, so the wall time is Prefect's and drover's own overhead).

Run: .venv/bin/python bench/fleet.py [--clusters 250 --sites 10 --databases postgresql,sqlite]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)
TARGET = "v1.14.0"


def write_config(folder: Path, name: str, profile: str, clock: str) -> str:
    data = yaml.safe_load((REPO / "configs" / "lab.yaml").read_text())
    data["metadata"]["name"] = name
    data["spec"]["controlPlane"]["count"], data["spec"]["workers"][0]["count"] = 3, 2
    patches = folder / "patches"
    patches.mkdir(exist_ok=True)
    for patch in (REPO / "configs" / "patches").glob("*.yaml"):
        if not (patches / patch.name).exists():  # the first cluster's, deployed alone: two
            shutil.copy(patch, patches / patch.name)  # processes never copy over a read
    data["spec"]["provider"] = {"kind": "lab", "profile": profile, "clock": clock, "seed": 1,
                                "network": "10.5.0.0/16"}  # room for 250 clusters
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def deploy_one(args: tuple[str, str, str, str]) -> None:
    folder, name, profile, clock = args
    from drover import deploy
    from drover.spec import load_spec

    deploy.converge(deploy.Infra.open(load_spec(write_config(Path(folder), name, profile,
                                                                      clock))))


def deploy_fleet(home: Path, configs: Path, sites: dict[str, list[str]], profile: str,
                 clock: str) -> float:
    """Deploy every cluster with the library (no Prefect), two processes at a time."""
    os.environ["DROVER_HOME"] = str(home)
    started = time.perf_counter()
    names = sum(sites.values(), [])
    deploy_one((str(configs), names[0], profile, clock))  # the lab's database, made once
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(deploy_one, [(str(configs), n, profile, clock) for n in names[1:]]))
    return time.perf_counter() - started


def write_fleet(configs: Path, sites: dict[str, list[str]], fleet_limit: int,
                per_site: int) -> str:
    path = configs / "fleet-bench.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "drover/v1alpha1", "kind": "Fleet", "metadata": {"name": "bench"},
        "spec": {"talosVersion": TARGET, "limits": {"fleet": fleet_limit, "perSite": per_site},
                 "sites": [{"name": site, "workPool": f"pool-{site}", "clusters": names}
                           for site, names in sites.items()]}}))
    return str(path)


class Prober(threading.Thread):
    """Times one flow-run query against the API every half second until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.samples, self.halt = url, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as api:
            while not self.halt.wait(0.5):
                started = time.perf_counter()
                api.post("/flow_runs/filter", json={"limit": 5})
                self.samples.append(time.perf_counter() - started)


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of `pid` and every process below it: its own and its reaped children's
    (cutime), plus each live descendant's (read from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
    found, frontier = [pid] if pid in stats else [], [pid]
    while frontier:
        frontier = [p for p, fields in stats.items() if int(fields[1]) in frontier]
        found += frontier
    return sum(sum(int(x) for x in stats[p][11:15]) for p in found) / ticks


def machine_cpu() -> float:
    """CPU seconds every core of the machine has been busy (all processes, anyone's)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_sample(state: dict[str, Any], postmaster: Path) -> dict[str, float]:
    """CPU seconds so far of the server, its PostgreSQL, the fleet flow's worker (the fleet
    flow runs below it), the site workers (the cluster runs below them), the machine."""
    workers = {pool: info["pid"] for pool, info in state["workers"].items()}
    try:
        pg = int(postmaster.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pg = None
    return {"server": tree_cpu(state["server_pid"]), "postgres": tree_cpu(pg) if pg else 0.0,
            "fleet flow": tree_cpu(workers.pop("drover-local", None)),
            "cluster runs": sum(tree_cpu(pid) for pid in workers.values()),
            "machine": machine_cpu()}


def when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def ideal_seconds(children: list[dict], wave_of: dict[str, str], site_of: dict[str, str],
                  fleet_limit: int, per_site: int, since: str = "start_time") -> float:
    """The least wall time the limits allow for these runs' durations, wave after wave; a
    run lasts from `since` (start_time: Running; created: dispatched, its process start
    included, which is how long it holds its slots) to its end."""
    total = 0.0
    for wave in sorted(set(wave_of.values())):
        runs = [c for c in children if wave_of[c["parameters"]["cluster"]] == wave]
        if not runs:
            continue
        spans = [when(c["end_time"]) - when(c[since]) for c in runs]
        by_site: dict[str, float] = {}
        for run, span in zip(runs, spans, strict=True):
            site = site_of[run["parameters"]["cluster"]]
            by_site[site] = by_site.get(site, 0.0) + span
        total += max(sum(spans) / fleet_limit, max(by_site.values()) / per_site, max(spans))
    return total


def overhead(run: dict, children: list[dict], wave_of: dict[str, str],
             site_of: dict[str, str], fleet_limit: int, per_site: int) -> dict[str, float]:
    """Where the fleet's wall time above its slot-time ideal went (seconds): before the first
    cluster run was created, within the waves (their span above their own ideal: slots left
    idle between a run's end and the next run's creation, the last runs' tail), between the
    waves (a wave's last end to the next wave's first creation), after the last run ended."""
    waves = sorted(set(wave_of.values()))
    runs = {w: [c for c in children if wave_of[c["parameters"]["cluster"]] == w]
            for w in waves}
    first = {w: min(when(c["created"]) for c in runs[w]) for w in waves}
    last = {w: max(when(c["end_time"]) for c in runs[w]) for w in waves}
    return {"head": first[waves[0]] - when(run["start_time"]),
            "within_waves": sum(last[w] - first[w] - ideal_seconds(
                runs[w], wave_of, site_of, fleet_limit, per_site, "created") for w in waves),
            "between_waves": sum(first[b] - last[a] for a, b in itertools.pairwise(waves)),
            "tail": when(run["end_time"]) - last[waves[-1]]}


def measure(database: str, template: Path, sites: dict[str, list[str]], fleet_limit: int,
            per_site: int) -> dict[str, Any]:
    from drover import server

    work = Path(tempfile.mkdtemp(prefix=f"drover-bench-{database}-"))
    shutil.copytree(template, work, dirs_exist_ok=True, symlinks=True)
    os.environ.update(DROVER_HOME=str(work / "home"), DROVER_CONFIG_ROOT=str(work / "configs"))
    fleet = write_fleet(work / "configs", sites, fleet_limit, per_site)
    started = time.perf_counter()
    state = server.start(REPO, use_postgres=database == "postgresql",
                         site_pools=[f"pool-{s}" for s in sites], worker_limit=per_site + 1)
    start_up = time.perf_counter() - started
    try:
        with httpx.Client(base_url=state["url"], timeout=60) as api:
            for name in ("check-health/check-health", "upgrade-fleet/upgrade-fleet"):
                deployment = api.get(f"/deployments/name/{name}").json()
                api.patch(f"/deployments/{deployment['id']}", json={"paused": True})
            prober = Prober(state["url"])
            prober.start()
            postmaster = work / "home" / "server" / "postgres" / "data" / "postmaster.pid"
            cpu_before, loads = cpu_sample(state, postmaster), []
            deployment = api.get("/deployments/name/upgrade-fleet/upgrade-fleet").json()
            run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                           json={"parameters": {"fleet": fleet}}).json()
            while (run := api.get(f"/flow_runs/{run['id']}").json())["state"]["type"] not in {
                    "COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                loads.append(os.getloadavg()[0])
                time.sleep(1)
            prober.halt.set()
            cpu = {k: v - cpu_before[k] for k, v in cpu_sample(state, postmaster).items()}
            children = []
            while page := api.post("/flow_runs/filter", json={
                    "flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}},
                    "limit": 200, "offset": len(children)}).json():
                children += page
            report = next(a for a in api.post("/artifacts/filter", json={
                "artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
                if a["key"] == "fleet-bench")
    finally:
        server.stop()
    rows = yaml.safe_load(report["data"])
    wave_of = {r["cluster"]: r["wave"] for r in rows}
    site_of = {r["cluster"]: r["site"] for r in rows}
    done = [c for c in children if c["start_time"] and c["end_time"]]
    first = min(when(c["start_time"]) for c in done)
    last = max(when(c["end_time"]) for c in done)
    latencies = sorted(prober.samples)
    return {"database": database, "state": run["state"]["type"],
            "summary": report["description"], "start_up": start_up,
            "wall": when(run["end_time"]) - when(run["start_time"]),
            "ideal": ideal_seconds(done, wave_of, site_of, fleet_limit, per_site),
            "ideal_slot": ideal_seconds(done, wave_of, site_of, fleet_limit, per_site,
                                        "created"),
            "median_start": statistics.median(when(c["start_time"]) - when(c["created"])
                                              for c in done),
            "median_run": statistics.median(when(c["end_time"]) - when(c["start_time"])
                                            for c in done),
            "runs_per_minute": len(done) / (last - first) * 60, "cluster_runs": len(done),
            "over_ideal": overhead(run, done, wave_of, site_of, fleet_limit, per_site),
            "runs": [{k: c[k] for k in ("created", "start_time", "end_time")}
                     | {"cluster": c["parameters"]["cluster"]} for c in done],
            "cpu": cpu, "load_average": statistics.mean(loads) if loads else None,
            "p50": latencies[len(latencies) // 2] * 1000,
            "p95": latencies[math.ceil(len(latencies) * 0.95) - 1] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=250)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--fleet-limit", type=int, default=10)
    parser.add_argument("--per-site", type=int, default=2)
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument("--profile", default="instant", help="lab profile of the clusters")
    parser.add_argument("--clock", default="virtual", help="lab clock: virtual or system")
    parser.add_argument("--template", help="folder of clusters an earlier run deployed "
                        "(same profile and clock, at least as many clusters): not deployed again")
    args = parser.parse_args()
    sites = {f"s{i:02d}": [f"f{i:02d}c{j:03d}" for j in range(args.clusters)
                           if j % args.sites == i] for i in range(args.sites)}
    template = Path(args.template or tempfile.mkdtemp(prefix="drover-bench-fleet-"))
    if all((template / "configs" / f"{name}.yaml").is_file() for name in sum(
            sites.values(), [])):
        took = 0.0  # deployed by an earlier run (of this size or larger): copied per database
    else:
        (template / "configs").mkdir(parents=True, exist_ok=True)
        took = deploy_fleet(template / "home", template / "configs", sites, args.profile,
                            args.clock)
    print(f"lab clusters deployed in {template} (--template to reuse)", flush=True)
    print(f"{args.clusters} lab clusters (3+2, {args.profile} profile, {args.clock} clock) "
          f"over {args.sites} sites {f'deployed in {took:.0f}s' if took else 'reused'}; "
          f"limits: fleet {args.fleet_limit}, per site {args.per_site}; waves 1, 5%, rest",
          flush=True)
    load_before = os.getloadavg()[0]
    print(f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load average "
          f"{load_before:.1f} before the runs", flush=True)
    results = [measure(db, template, sites, args.fleet_limit, args.per_site)
               for db in args.databases.split(",")]
    print(f"\n{'':30}" + "".join(f"{r['database']:>14}" for r in results))
    rows: list[tuple[str, str, str | None]] = [
            ("fleet run", "state", "{}"), ("server + workers start (s)", "start_up", "{:.0f}"),
            ("fleet wall (s)", "wall", "{:.0f}"),
            ("ideal, runs' slot time (s)", "ideal_slot", "{:.0f}"),
            ("wall / ideal (slot)", "ideal_slot", None),
            ("ideal, runs' Running (s)", "ideal", "{:.0f}"),
            ("wall / ideal (Running)", "ideal", None),
            ("median run start (s)", "median_start", "{:.1f}"),
            ("median run Running (s)", "median_run", "{:.1f}"),
            ("cluster runs per minute", "runs_per_minute", "{:.1f}"),
            ("API latency p50 (ms)", "p50", "{:.0f}"), ("API latency p95 (ms)", "p95", "{:.0f}")]
    for r in results:  # CPU seconds per cluster run, by who spent them
        r |= {f"cpu_{k}": v / r["cluster_runs"] for k, v in r["cpu"].items()}
        r["cpu_others"] = r["cpu_machine"] - sum(v for k, v in r["cpu"].items()
                                                 if k != "machine") / r["cluster_runs"]
    for r in results:
        r |= {f"over_{k}": v for k, v in r["over_ideal"].items()}
    rows += [(f"over ideal: {k.replace('_', ' ')} (s)", f"over_{k}", "{:.0f}") for k in (
        "head", "within_waves", "between_waves", "tail")]
    rows += [(f"CPU s per run: {k}", f"cpu_{k}", "{:.2f}") for k in (
        "cluster runs", "server", "postgres", "fleet flow", "others", "machine")]
    for r in results:  # how busy the machine's cores were (anyone's work) over the fleet run
        r["busy"] = 100 * r["cpu"]["machine"] / (r["wall"] * (os.cpu_count() or 1))
    rows += [("machine busy (% of its cores)", "busy", "{:.0f}"),
             ("load average during the run", "load_average", "{:.1f}")]
    for label, key, fmt in rows:
        cells = [f"{r['wall'] / r[key]:.2f}x" if fmt is None else fmt.format(r[key])
                 for r in results]
        print(f"{label:30}" + "".join(f"{c:>14}" for c in cells))
    for r in results:
        print(f"{r['database']}: {r['summary']}")
    print(f"load average {os.getloadavg()[0]:.1f} after the runs")
    out = REPO / "bench" / "results" / f"fleet-{datetime.now():%Y%m%d-%H%M%S}.json"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                            capture_output=True, check=False).stdout.strip()
    out.write_text(json.dumps({"clusters": args.clusters, "sites": args.sites, "commit": commit,
                               "load_average_before": load_before,
                               "limits": {"fleet": args.fleet_limit, "per_site": args.per_site},
                               "profile": args.profile, "clock": args.clock,
                               "cpus": os.cpu_count(), "deployed_in": took,
                               "results": results}, indent=1))
    print(f"results: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
