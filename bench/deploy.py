"""Benchmark: what a deploy costs drover itself, and what the lab predicts it takes.

Prints three tables:
1. the library alone (no Prefect): a whole deploy on the lab's manual clock, per size;
2. the deploy-cluster flow under Prefect (ephemeral mode, or PREFECT_API_URL if set),
   instant profile on the virtual clock: the orchestration overhead per node;
3. the realistic profile, compressed 60x on the wall clock and scaled back up: the
   deploy time the lab predicts at real-world durations, against the 10-minute target
   and the 45-minute baseline. (Not on the virtual clock: there, parallel waits run
   ahead of each other, so its durations are no prediction.)

Run: .venv/bin/python bench/deploy.py [--sizes 5,20,50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ["DROVER_HOME"] = tempfile.mkdtemp(prefix="drover-bench-")


def write_config(folder: Path, name: str, workers: int, profile: str,
                 clock: str = "virtual", compression: float = 1) -> str:
    data = yaml.safe_load((REPO / "configs" / "lab.yaml").read_text())
    data["metadata"]["name"] = name
    data["spec"]["workers"][0]["count"] = workers
    data["spec"]["patches"] = {}
    data["spec"]["provider"] = {"kind": "lab", "profile": profile, "clock": clock, "seed": 1,
                                "compression": compression}
    data["spec"]["deployment"] = {"maxParallel": 64}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def library_deploy(workers: int) -> tuple[int, float]:
    from drover import deploy
    from drover.lab.clock import ManualClock
    from drover.lab.datacenter import Datacenter
    from drover.spec import load_spec

    folder = Path(tempfile.mkdtemp())
    spec = load_spec(write_config(folder, f"lib{workers}", workers, "demo"))
    lab = Datacenter(spec, folder / "lab.db", ManualClock())
    infra = deploy.Infra.on_lab(spec, lab)
    started = time.perf_counter()
    deploy.converge(infra)
    return len(spec.declared_nodes()), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,20,50", help="nodes per cluster (3 are CPs)")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="drover-bench-configs-"))

    print("1. library only (lab, demo profile, manual clock)")
    print(f"{'nodes':>6} {'wall s':>8} {'ms/node':>8}")
    for size in sizes:
        nodes, wall = library_deploy(size - 3)
        print(f"{nodes:>6} {wall:>8.2f} {1000 * wall / nodes:>8.1f}")

    from flows.deploy import deploy_cluster  # imports Prefect

    print("\n2. deploy-cluster flow under Prefect (instant profile, virtual clock)")
    print(f"{'nodes':>6} {'wall s':>8} {'ms/node':>8}")
    deploy_cluster(config=write_config(folder, "warmup", 0, "instant"))  # server start-up
    for size in sizes:
        started = time.perf_counter()
        deploy_cluster(config=write_config(folder, f"flow{size}", size - 3, "instant"))
        wall = time.perf_counter() - started
        print(f"{size:>6} {wall:>8.2f} {1000 * wall / size:>8.1f}")

    print("\n3. predicted deploy time at real-world durations (realistic profile, 60x)")
    print("   (drover's own overhead is scaled up 60x too, so large sizes read pessimistic)")
    print(f"{'nodes':>6} {'predicted':>10}  verdict")
    for size in sizes:
        result = deploy_cluster(config=write_config(folder, f"real{size}", size - 3,
                                                    "realistic", "system", 60))
        total = next(r["duration"] for r in result["timing"] if r["stage"] == "total")
        print(f"{size:>6} {total:>10}  {result['verdict']}")


if __name__ == "__main__":
    main()
