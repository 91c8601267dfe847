"""Benchmark: drover's deploy and upgrade on the lab's realistic profile under exact virtual
time, against the targets of issue 8, in one table.

Each scenario runs in a fresh Python process (its own Prefect ephemeral server, its own peak
memory) through `drover.predict`: the real flows on a scratch lab, compression 1, seed 1,
an AutojumpClock. Rows: deploy at 3+2, 3+20, 3+100 (predicted wall, critical path = the
physical limit of the lab's draws, efficiency = critical path / wall, drover's own CPU
seconds on the wall clock); the rolling upgrade of 3+20 at maxUnavailable 1 and 5 against
its ideal (per-batch time × batches); config delivery; orchestration overhead (node tasks
per second of real time under Prefect) and peak memory (ru_maxrss) of the 3+100 deploy. The
fleet of 250 clusters is bench/fleet.py's. Writes bench/results/run-<date>.json (machine,
commit, profile, date).

Run: .venv/bin/python bench/run.py     (about 3 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SEED = 1
SCENARIOS = ["deploy:2", "deploy:20", "deploy:100", "upgrade:20:1", "upgrade:20:5"]
PROFILE = f"lab realistic, compression 1, seed {SEED}, exact virtual time (AutojumpClock)"


def write_config(folder: Path, workers: int) -> Path:
    data = yaml.safe_load((REPO / "configs" / "lab.yaml").read_text())
    data["metadata"]["name"] = f"bench{workers}"
    data["spec"]["workers"][0]["count"] = workers
    data["spec"]["deployment"] = {"maxParallel": 128}
    shutil.copytree(REPO / "configs" / "patches", folder / "patches", dirs_exist_ok=True)
    path = folder / f"bench{workers}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_scenario(name: str) -> dict[str, Any]:
    """In this process: one scenario through drover.predict; its phases as JSON data."""
    sys.path.insert(0, str(REPO))
    os.environ["DROVER_HOME"] = tempfile.mkdtemp(prefix="drover-bench-home-")
    from dataclasses import asdict

    from prefect import flow

    from drover.predict import predict
    from flows.deploy import deploy_cluster
    from flows.upgrade import upgrade_cluster

    @flow(name="bench-warm-up")
    def warm_up() -> None:
        """Starts the ephemeral Prefect server, so no scenario pays for it."""

    warm_up()
    kind, workers, *rest = name.split(":")
    config = write_config(Path(tempfile.mkdtemp(prefix="drover-bench-")), int(workers))
    upgrade = kind == "upgrade"
    result = predict(config, deploy_cluster, upgrade_cluster if upgrade else None,
                     "v1.14.0" if upgrade else None,
                     max_unavailable=int(rest[0]) if rest else None, seed=SEED)
    return {"scenario": name, "source": result.source,
            "phases": [{**asdict(p), "efficiency": p.efficiency} for p in result.phases],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def spawn(name: str) -> dict[str, Any]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_LOGGING_SERVER_LEVEL": "CRITICAL",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    done = subprocess.run([sys.executable, __file__, "--scenario", name], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"scenario {name} failed:\n{done.stderr[-3000:]}")


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{round(seconds % 60):02d}s"


def table(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(row, measured, target, verdict) for each line of the table."""
    rows = []
    deploys = {n: results[f"deploy:{n}"]["phases"][0] for n in (2, 20, 100)}
    for n, phase in deploys.items():
        goal = 0.90 if n == 100 else 0.95
        rows.append((f"deploy 3+{n}", f"wall {minutes(phase['wall_seconds'])}, critical path "
                     f"{minutes(phase['critical_seconds'])}, efficiency "
                     f"{phase['efficiency']:.3f}, CPU {phase['cpu_seconds']:.1f}s",
                     f"efficiency >= {goal}", ok(phase["efficiency"] >= goal)))
    ratio = deploys[100]["wall_seconds"] / deploys[2]["wall_seconds"]
    rows.append(("3+100 vs 3+2 wall", f"{ratio:.3f}x", "<= 1.15x", ok(ratio <= 1.15)))
    for mu in (1, 5):
        phase = results[f"upgrade:20:{mu}"]["phases"][1]
        over = phase["wall_seconds"] / phase["critical_seconds"]
        rows.append((f"upgrade 3+20, maxUnavailable {mu}",
                     f"wall {minutes(phase['wall_seconds'])}, ideal "
                     f"{minutes(phase['critical_seconds'])} ({phase['critical_path']}), "
                     f"{over:.3f}x", "<= 1.10x ideal", ok(over <= 1.10)))
    small = deploys[2]
    rows.append(("config delivery: pushed over the API",
                 f"{small['push_seconds']:.1f}s from maintenance mode to install per node "
                 f"(3+2 wall {minutes(small['wall_seconds'])})",
                 "3+2 < 6m with config at first boot", "-"))
    rows.append(("config delivery: read at first boot", "not measured: the lab emulates no "
                 "config volume (libvirt's cidata path is bench/libvirt.py's)", "-", "n/a"))
    big = results["deploy:100"]
    phase = big["phases"][0]
    rows.append(("orchestration overhead, 3+100",
                 f"{phase['tasks'] / phase['real_seconds']:.1f} node tasks/s under Prefect "
                 f"({phase['tasks']} tasks in {phase['real_seconds']:.1f}s real)", "-", "-"))
    rows.append(("peak memory, 3+100", f"{big['peak_rss_mib']:.0f} MiB (ru_maxrss, whole "
                 "process incl. the ephemeral Prefect server)", "< 500 MiB",
                 ok(big["peak_rss_mib"] < 500)))
    rows.append(("fleet 250 x (3+2) over 10 sites", "see bench/fleet.py", "<= 1.20x ideal",
                 "-"))
    return rows


def ok(passed: bool) -> str:
    return "met" if passed else "MISSED"


def commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "drover",
                            "flows", "tasks"], capture_output=True, text=True, check=False)
    return done.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(run_scenario(args.scenario)))
        return
    started = time.perf_counter()
    results = {}
    for name in SCENARIOS:
        results[name] = spawn(name)
        print(f"  {name}: done after {time.perf_counter() - started:.0f}s", file=sys.stderr)
    rows = table(results)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("row", "measured", "target", "verdict")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    date = datetime.now(UTC)
    machine = {"host": platform.node(), "system": platform.platform(),
               "python": platform.python_version(), "cpus": os.cpu_count(),
               "load": os.getloadavg()}
    print(f"\n{PROFILE}; durations {results['deploy:2']['source']}; {machine['cpus']} CPUs, "
          f"load {machine['load'][0]:.1f}; commit {commit()}; {date:%Y-%m-%d %H:%M} UTC; "
          f"bench took {time.perf_counter() - started:.0f}s")
    out = REPO / "bench" / "results" / f"run-{date:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"date": date.isoformat(), "machine": machine, "commit": commit(),
                               "profile": PROFILE, "scenarios": results,
                               "table": [dict(zip(header, r, strict=True)) for r in rows]},
                              indent=2))
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
