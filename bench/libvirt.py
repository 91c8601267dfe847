"""Benchmark: the real-VM path. Tiny VMs (tests/system/tinyimage.py) through `drover deploy`
of configs/examples/libvirt-local.yaml on this machine's libvirt (QEMU software emulation),
reached over SSH through an sshd on 127.0.0.1, against a running Prefect server (started
here, as an operator would keep one). For each size it times, from the moment `drover
deploy` is launched: every console showing its own config's sha256 (the target), the
command's exit, and each provider step per node (DROVER_STEPS_FILE, drover/steps.py).
"QEMU boot" is the guest's part: from its `virsh start` returning to its hash on the
console; drover's share is the rest of the time to every hash. Also recorded: the
deploy command's own CPU seconds and the load average when each run began (the 2 cores
are shared). The host keeps its boot files between runs as a real one does: a first,
cold run uploads them and is reported on its own line, the medians are of the warm runs.
Each deploy is destroyed after. Prints a table and writes
bench/results/libvirt-<date>.json. Needs root, libvirt, qemu, genisoimage and sshd
(`make system-deps`).

With --against DIR (another checkout, e.g. `git archive <commit> | tar -x -C DIR`; its
image cached in DIR/.image), each repeat runs that checkout's `drover deploy`, tiny image
and example config right after this one's, so both meet the same machine load; its rows
are labelled "against".

Run: .venv/bin/python bench/libvirt.py [--sizes 3,10] [--repeat 3] [--against DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tests.system import libvirthost  # noqa: E402
from tests.system.conftest import free_port  # noqa: E402
from tests.system.tinyimage import build  # noqa: E402

HASH = re.compile(r"DROVER-CIDATA host=(\S+) sha256=([0-9a-f]{64})")
# --trace-ssh: time every SSH command and upload of the deploy (for code without drover.steps)
TRACE = """
import json, os, threading, time
import drover.ssh as s
def wrap(name, fn):
    def timed(self, *a, **k):
        t = time.time()
        try:
            return fn(self, *a, **k)
        finally:
            what = ' '.join(map(str, a[0]))[:80] if name == 'run' else 'upload ' + str(a[1])
            with open(os.environ['DROVER_STEPS_FILE'], 'a') as f:
                f.write(json.dumps({'node': threading.current_thread().name, 'step': what,
                                    'started': t, 'seconds': time.time() - t, 'ok': True}) + '\\n')
    return timed
s.Connection.run = wrap('run', s.Connection.run)
s.Connection.upload = wrap('upload', s.Connection.upload)
import runpy; runpy.run_module('drover.cli', run_name='__main__')
"""


def start_prefect(folder: Path) -> tuple[dict[str, str], subprocess.Popen[bytes]]:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(folder), "PREFECT_UI_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env,
                            stdout=(folder / "server.log").open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        try:
            return httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    libvirthost.wait_until(healthy, 120, "the Prefect server", step=0.2)
    return env, proc


def build_in(repo: Path) -> tuple[Path, Path]:
    """The tiny image as `repo`'s tests/system/tinyimage.py builds it (its own cache)."""
    if repo == REPO:
        return build()
    spec = importlib.util.spec_from_file_location("other_tinyimage",
                                                  repo / "tests/system/tinyimage.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    os.environ["DROVER_TEST_CACHE"] = str(repo / ".image")
    try:
        return module.build()
    finally:
        del os.environ["DROVER_TEST_CACHE"]


def write_config(folder: Path, ssh: libvirthost.Sshd, storage: Path, name: str,
                 nodes: int, repo: Path = REPO) -> Path:
    kernel, initrd = build_in(repo)
    base = folder / "base.qcow2"
    if not base.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
        base.chmod(0o644)
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(ssh.known_hosts_line)
    data = yaml.safe_load((repo / "configs/examples/libvirt-local.yaml").read_text())
    data["metadata"]["name"] = name
    data["spec"]["workers"][0]["count"] = nodes - 1
    data["spec"]["provider"].update(
        hosts=[{"host": "127.0.0.1", "port": ssh.port, "user": ssh.user,
                "keyFile": str(ssh.user_key_file), "knownHosts": str(known_hosts)}],
        storageDir=str(storage), bootImage=str(base), kernel=str(kernel), initrd=str(initrd))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def watch_consoles(folder: Path, names: list[str], seen: dict[str, tuple[float, str]],
                   stop: threading.Event) -> None:
    """Record when each node's console first shows a config hash (a bench-side watcher)."""
    while not stop.is_set() and len(seen) < len(names):
        for name in names:
            console = folder / f"{name}.console.log"
            if name not in seen and console.exists():
                found = HASH.search(console.read_text(errors="replace"))
                if found:
                    seen[name] = (time.time(), found.group(2))
        time.sleep(0.01)


def one_run(env: dict[str, str], folder: Path, ssh: libvirthost.Sshd, storage: Path,
            nodes: int, trace: bool, repo: Path = REPO) -> dict[str, object]:
    from drover.home import cluster_dir
    from drover.machineconfig import load_secrets, render_node_yaml
    from drover.spec import load_spec

    name = f"b{uuid.uuid4().hex[:6]}"
    config = write_config(folder, ssh, storage, name, nodes, repo)
    spec = load_spec(config)
    names = [n.name for n in spec.declared_nodes()]
    steps_file = folder / f"{name}-steps.jsonl"
    run_env = {**env, "DROVER_STEPS_FILE": str(steps_file)}
    seen: dict[str, tuple[float, str]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_consoles, args=(storage / name, names, seen, stop))
    command = ([sys.executable, "-c", TRACE] if trace else [sys.executable, "-m", "drover.cli"])
    load = os.getloadavg()[0]
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    watcher.start()
    deploy = subprocess.run([*command, "deploy", str(config)], cwd=repo, env=run_env,
                            capture_output=True, text=True, timeout=900, check=False)
    deployed = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    deploy_cpu = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    (folder / f"{name}-deploy.log").write_text(f"launched {started:.3f}\n{deploy.stdout}\n"
                                                f"{deploy.stderr}")
    watcher.join(timeout=120)
    stop.set()
    try:
        if deploy.returncode != 0:
            raise RuntimeError(f"drover deploy failed:\n{deploy.stdout}\n{deploy.stderr}")
        os.environ["DROVER_HOME"] = env["DROVER_HOME"]
        secrets = load_secrets(cluster_dir(name))
        for node in spec.declared_nodes():
            digest = hashlib.sha256(render_node_yaml(spec, node, secrets).encode()).hexdigest()
            if seen.get(node.name, (0, ""))[1] != digest:
                raise RuntimeError(f"{node.name}: console shows {seen.get(node.name)}, "
                                   f"expected its config's sha256 {digest}")
    finally:
        destroy_started = time.time()
        gone = subprocess.run([sys.executable, "-m", "drover.cli", "destroy", name, "--yes"],
                              cwd=repo, env=run_env, capture_output=True, text=True,
                              timeout=900, check=False)
        destroyed = time.time() - destroy_started
        for left in remove_leftovers(name):  # a failed destroy leaves no guest eating CPU
            print(f"removed leftover domain {left} (drover destroy did not)")
        shutil.rmtree(storage / name, ignore_errors=True)  # the boot files stay
    if gone.returncode != 0:
        raise RuntimeError(f"drover destroy failed:\n{gone.stdout}\n{gone.stderr}")
    steps = [json.loads(line) for line in steps_file.read_text().splitlines()] \
        if steps_file.exists() else []
    hashes = max(at for at, _ in seen.values()) - started
    started_vm = {s["node"]: s["started"] + s["seconds"] for s in steps if s["step"] == "start"}
    boots = {n: seen[n][0] - started_vm[n] for n in names if n in started_vm}
    last = max(names, key=lambda n: seen[n][0])
    qemu = boots.get(last, 0.0)
    ends = [s["started"] + s["seconds"] - started for s in steps if s["step"] == "address"]
    phases = {  # launch → first provider call → last address found → the command's exit
        "before_provider": min(s["started"] for s in steps) - started if steps else 0.0,
        "after_addresses": deployed - max(ends) if ends else 0.0}
    return {"nodes": nodes, "cluster": name, "to_all_hashes": hashes, "deploy_exit": deployed,
            **phases, "load": load, "deploy_cpu": deploy_cpu,
            "wall": max(hashes, deployed), "qemu_boot_last_node": qemu,
            "drover_share": hashes - qemu, "destroy": destroyed,
            "boots": boots, "steps": [{**s, "started": s["started"] - started} for s in steps]}


def remove_leftovers(cluster: str) -> list[str]:
    """Destroy and undefine any domain of `cluster` still defined; their names."""
    virsh = ["virsh", "-q", "-c", libvirthost.URI]
    names = subprocess.run([*virsh, "list", "--all", "--name"], capture_output=True, text=True,
                           check=False, timeout=60).stdout.split()
    left = [n for n in names if n.startswith(f"{cluster}-")]
    for domain in left:
        for verb in ("destroy", "undefine"):
            subprocess.run([*virsh, verb, domain], capture_output=True, check=False, timeout=60)
    return left


def per_step(runs: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Per step over runs: the median of (calls, summed seconds, slowest call)."""
    table: dict[str, list[tuple[int, float, float]]] = {}
    for run in runs:
        by: dict[str, list[float]] = {}
        for s in run["steps"]:  # type: ignore[union-attr]
            by.setdefault(s["step"], []).append(s["seconds"])
        for step, values in by.items():
            table.setdefault(step, []).append((len(values), sum(values), max(values)))
    return {step: {"calls": statistics.median(v[0] for v in values),
                   "sum": statistics.median(v[1] for v in values),
                   "max": statistics.median(v[2] for v in values)}
            for step, values in table.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,10", help="VMs per cluster (1 control plane)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (medians)")
    parser.add_argument("--trace-ssh", action="store_true",
                        help="time every SSH command (for code without drover.steps)")
    parser.add_argument("--label", default="", help="a word for the results file name")
    parser.add_argument("--against", type=Path, default=None,
                        help="another checkout, run alternately with this one")
    parser.add_argument("--leave-kvm", action="store_true",
                        help="leave /dev/kvm as it is (to measure a root-only /dev/kvm)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/libvirt.py needs root (libvirt's system URI, /var/lib/libvirt)")
    folder = Path(tempfile.mkdtemp(prefix="drover-bench-libvirt-"))
    os.chmod(folder, 0o755)
    kvm = None if args.leave_kvm else libvirthost.give_kvm_to_its_group()
    if kvm:
        print(f"host set-up: {kvm}")
    daemons = libvirthost.start_libvirtd()
    ssh, sshd = libvirthost.start_sshd(folder / "sshd", free_port())
    (folder / "prefect").mkdir()
    env, server = start_prefect(folder / "prefect")
    env["DROVER_HOME"] = str(folder / "home")
    storage = Path("/var/lib/libvirt/images") / f"drover-bench-{uuid.uuid4().hex[:6]}"
    results: dict[str, list[dict[str, object]]] = {}
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        results["cold"] = [one_run(env, folder, ssh, storage, sizes[0], args.trace_ssh)]
        if args.against:
            results["against cold"] = [one_run(env, folder, ssh, storage, sizes[0],
                                               args.trace_ssh, args.against.resolve())]
        for size in sizes:
            for _ in range(args.repeat):
                results.setdefault(str(size), []).append(
                    one_run(env, folder, ssh, storage, size, args.trace_ssh))
                if args.against:
                    results.setdefault(f"against {size}", []).append(one_run(
                        env, folder, ssh, storage, size, args.trace_ssh, args.against.resolve()))
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        for proc in (server, sshd):
            proc.terminate()
            proc.wait(timeout=30)
        libvirthost.stop_daemons(daemons)
    report(results, args)


def report(results: dict[str, list[dict[str, object]]], args: argparse.Namespace) -> None:
    median = statistics.median
    summary = {}
    print(f"\n{'VMs':>5} {'to hashes':>10} {'deploy exit':>12} {'QEMU boot':>10} "
          f"{'drover':>8} {'destroy':>8} {'to 1st call':>12} {'after addr':>11} "
          f"{'CLI cpu':>8} {'load':>5}   (medians of {args.repeat}, seconds)")
    for size, runs in results.items():
        row = {k: median(r[k] for r in runs) for k in  # type: ignore[misc]
               ("to_all_hashes", "deploy_exit", "wall", "qemu_boot_last_node", "drover_share",
                "destroy", "before_provider", "after_addresses", "deploy_cpu", "load")}
        summary[size] = {**row, "steps": per_step(runs)}
        label = size.replace("against ", "a").replace("cold", f"{runs[0]['nodes']}c")
        print(f"{label:>5} {row['to_all_hashes']:>10.2f} {row['deploy_exit']:>12.2f} "
              f"{row['qemu_boot_last_node']:>10.2f} {row['drover_share']:>8.2f} "
              f"{row['destroy']:>8.2f} {row['before_provider']:>12.2f} "
              f"{row['after_addresses']:>11.2f} {row['deploy_cpu']:>8.2f} {row['load']:>5.1f}")
    print("(3c: the first, cold run of the first size: boot files uploaded to the host; "
          "a…: --against's checkout)")
    for size, entry in summary.items():
        print(f"\nsteps, {size} VMs (median over runs of: calls, summed s, slowest call s)")
        for step, v in sorted(entry["steps"].items(), key=lambda kv: -kv[1]["sum"]):
            print(f"  {step[:60]:<60} {v['calls']:>5.0f} {v['sum']:>8.3f} {v['max']:>8.3f}")
    now = datetime.now(UTC)
    out = REPO / "bench" / "results" / \
        f"libvirt-{now:%Y%m%d-%H%M%S}{'-' + args.label if args.label else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": now.isoformat(), "machine": {"cpus": os.cpu_count(),
                                             "kernel": platform.release()},
        "label": args.label, "repeat": args.repeat, "summary": summary, "runs": results},
        indent=1) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
