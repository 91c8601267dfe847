"""Predictions: how long a deploy (and a rolling upgrade after it) of a config's cluster will
take, from running the real flows on a scratch lab under exact virtual time.

The config's cluster is copied onto the lab's realistic profile (compression 1, a fixed
seed, durations calibrated from real runs where there are any: calibration.py), written
into a scratch config root with a scratch $DROVER_HOME, and the flows run under an
AutojumpClock: virtual time jumps only when every thread waits, so the run takes seconds and
its virtual duration is the prediction. Beside it: the physical limit the lab's own draws
allow (the critical path: the last node's chain to Ready, through the API's start), drover's
CPU time on the wall clock (never scaled), and for a fleet file a schedule of its clusters
within the fleet's limits. The flows come in as callables, so this library imports no
Prefect. A prediction is kept per cluster ($DROVER_HOME/predictions/<cluster>.json) for the
deploy's summary to set beside what it took.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drover.boundaries import cluster_name
from drover.calibration import Calibration, calibrate, history_runs, realistic_profile
from drover.clock import AutojumpClock, measure, use_clock
from drover.fleet import FleetSpec, fleet_order, split_waves
from drover.home import drover_home, remembered_spec
from drover.lab.datacenter import Datacenter
from drover.spec import ClusterSpec, load_spec, parse_spec
from drover.statefile import private_dir, read_private
from drover.timing import History, RunTiming, format_duration

Flow = Callable[..., Any]
SEED = 1


@dataclass
class Phase:
    """One predicted run: its virtual wall time, the physical limit, drover's own cost."""

    flow: str
    wall_seconds: float
    critical_seconds: float
    critical_path: str
    cpu_seconds: float          # process CPU on the wall clock, never scaled
    real_seconds: float         # how long predicting it took
    ideal_note: str = ""
    tasks: int = 0              # node tasks the flow ran (its pipelines' steps, or nodes)
    push_seconds: float = 0.0   # deploy: mean wait from a node's maintenance mode to install

    @property
    def efficiency(self) -> float:
        return self.critical_seconds / self.wall_seconds if self.wall_seconds else 1.0


@dataclass
class Prediction:
    cluster: str
    nodes: int
    source: str                 # calibrated from N runs / assumed: profiles.yaml
    seed: int
    phases: list[Phase] = field(default_factory=list)
    fleet: dict[str, Any] | None = None
    calibration: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.cluster}: {self.nodes} nodes on the lab's realistic profile, seed "
               f"{self.seed}, exact virtual time; durations {self.source}"]
        out += [f"  {line}" for line in self.calibration]
        for p in self.phases:
            out += [f"{p.flow}: predicted {format_duration(p.wall_seconds)} (critical path "
                    f"{format_duration(p.critical_seconds)}, efficiency {p.efficiency:.2f})",
                    f"  critical path: {p.critical_path}",
                    f"  drover's own CPU: {p.cpu_seconds:.1f}s (wall clock; predicting took "
                    f"{p.real_seconds:.1f}s)"]
        if self.fleet:
            out.append(f"fleet {self.fleet['name']}: {self.fleet['clusters']} clusters in "
                       f"{self.fleet['waves']} wave(s), predicted "
                       f"{format_duration(self.fleet['seconds'])} ({self.fleet['note']})")
        return out


# ---- the deploy's physical limit, from the lab's own draws ---------------------------
def ideal_deploy(spec: ClusterSpec, lab: Datacenter) -> tuple[float, str]:
    """(seconds, chain): how soon the cluster could be healthy if nothing but the lab's
    durations took time and every node started at once; the chain is the last node's path."""
    def draw(step: str, name: str) -> float:
        return lab._draw(step, name)

    running, chains = {}, {}
    for node in spec.declared_nodes():
        steps = [(s, draw(s, node.name)) for s in ("create", "boot", "install", "reboot")]
        running[node.name], chains[node.name] = sum(d for _, d in steps), steps
    cps = [n.name for n in spec.declared_nodes() if n.role == "controlplane"]
    first = min(cps, key=lambda n: (running[n], n))
    member = running[first] + draw("bootstrap", first)
    api = member + draw("apiserver", spec.name)
    done: dict[str, tuple[float, list[tuple[str, float]]]] = {}
    for name, at in running.items():
        if at >= api:
            done[name] = (at + draw("node_ready", name), [*chains[name],
                                                         ("node_ready", draw("node_ready", name))])
        else:
            done[name] = (api + draw("node_ready", name), [
                *chains[first], ("bootstrap", member - running[first]), ("apiserver", api - member),
                ("node_ready", draw("node_ready", name))])
        if name in cps and name != first:
            joined = max(at, member) + draw("etcd_join", name)
            if joined > done[name][0]:
                done[name] = (joined, [*chains[name], ("etcd_join", joined - at)])
    last = max(done, key=lambda n: (done[n][0], n))
    seconds, chain = done[last]
    text = " → ".join(f"{s} {format_duration(d)}" for s, d in chain)
    if chain[:4] != chains[last] or last == first and chain[-1][0] == "node_ready":
        *through_api, ready = text.split(" → ")  # the first control plane's chain, the API
        text = f"{first}: {' → '.join(through_api)} → {last}: {ready}"
        return seconds, text
    return seconds, f"{last}: {text}"


def node_upgrades(lab: Datacenter, since: float) -> dict[str, float]:
    """Per node, seconds from its cordon to its uncordon in the lab's events after `since`."""
    began: dict[str, float] = {}
    took: dict[str, float] = {}
    for at, node, what in lab.events():
        if at < since or node is None:
            continue
        if what == "cordoned":
            began.setdefault(node, at)
        elif what == "uncordoned" and node in began:
            took[node] = at - began[node]
    return took


def config_push(lab: Datacenter) -> float:
    """Mean seconds from a node reaching maintenance mode to its install starting: what
    delivering its config over the API added (a config read at first boot adds none)."""
    maintenance: dict[str, float] = {}
    gaps = []
    for at, node, what in lab.events():
        if what == "maintenance" and node is not None:
            maintenance.setdefault(node, at)
        elif what == "installing" and node in maintenance:
            gaps.append(at - maintenance.pop(node))
    return sum(gaps) / len(gaps) if gaps else 0.0


def ideal_upgrade(spec: ClusterSpec, took: dict[str, float], max_unavailable: int
                  ) -> tuple[float, str]:
    """Per-batch time × batches: control planes one by one, then the workers' mean node time
    for each batch of max_unavailable."""
    cps = [n for n in took if n.startswith(f"{spec.name}-cp-")]
    workers = [n for n in took if n not in cps]
    batches = math.ceil(len(workers) / max_unavailable) if workers else 0
    per_batch = sum(took[n] for n in workers) / len(workers) if workers else 0.0
    seconds = sum(took[n] for n in cps) + batches * per_batch
    return seconds, (f"{len(cps)} control plane(s) one by one, then {batches} batch(es) of "
                     f"{max_unavailable} at {format_duration(per_batch)} each")


# ---- a fleet of clusters like this one -------------------------------------------------
def fleet_schedule(fleet: FleetSpec, seconds: float) -> dict[str, Any]:
    """The fleet's upgrade if each of its clusters took `seconds`: waves one after another,
    within each wave at most `limits.fleet` clusters at once and `limits.perSite` per site."""
    body = fleet.spec
    waves = split_waves(fleet_order(body.sites), body.rollout.waves)
    total = 0.0
    for wave in waves:
        free_at: list[float] = []  # end times of running clusters
        site_free: dict[str, list[float]] = {}
        end = 0.0
        for site, _cluster in wave:
            mine = site_free.setdefault(site.name, [])
            start = 0.0
            if len(free_at) >= body.limits.fleet:
                start = sorted(free_at)[len(free_at) - body.limits.fleet]
            if len(mine) >= body.limits.per_site:
                start = max(start, sorted(mine)[len(mine) - body.limits.per_site])
            finish = start + seconds
            free_at.append(finish)
            mine.append(finish)
            end = max(end, finish)
        total += end
    return {"name": fleet.metadata.name, "clusters": sum(len(w) for w in waves),
            "waves": len(waves), "seconds": total,
            "note": f"each cluster as this one, {format_duration(seconds)}; limits fleet "
                    f"{body.limits.fleet}, per site {body.limits.per_site}"}


# ---- the scratch lab -------------------------------------------------------------------
def lab_copy(spec: ClusterSpec, seed: int = SEED) -> dict[str, Any]:
    """The spec's YAML data on the lab's realistic profile (compression 1, `seed`, no faults),
    with an address pool that holds every node."""
    data = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    network = "10.5.0.0/24" if spec.node_count + 16 < 254 else "10.5.0.0/16"
    data["spec"]["provider"] = {"kind": "lab", "profile": "realistic", "compression": 1,
                                "clock": "virtual", "seed": seed, "network": network}
    return data


@contextmanager
def scratch_lab(data: dict[str, Any]) -> Iterator[tuple[Path, Path]]:
    """(config, home): the config written into a scratch config root, with $DROVER_HOME and
    $DROVER_CONFIG_ROOT pointed at scratch folders for the block, then put back."""
    saved = {key: os.environ.get(key) for key in ("DROVER_HOME", "DROVER_CONFIG_ROOT")}
    with tempfile.TemporaryDirectory(prefix="drover-predict-") as scratch:
        root, home = Path(scratch, "configs"), Path(scratch, "home")
        private_dir(root)
        config = root / f"{cluster_name(data['metadata']['name'])}.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        os.environ["DROVER_HOME"], os.environ["DROVER_CONFIG_ROOT"] = str(home), str(root)
        try:
            yield config, private_dir(home)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def last_run(home: Path, cluster: str, flow: str) -> RunTiming:
    return History(home / "history.db").runs(cluster, flow)[-1]


def predict(config: str | Path, deploy: Flow, upgrade: Flow | None = None,
            upgrade_version: str | None = None, max_unavailable: int | None = None,
            fleet: FleetSpec | None = None, seed: int = SEED,
            calibration: Calibration | None = None) -> Prediction:
    """Predict the deploy of `config`'s cluster (then its upgrade to `upgrade_version`) by
    running `deploy(config=...)` (and `upgrade(cluster=..., talos_version=...,
    max_unavailable=...)`): the flows, passed in so this library stays Prefect-free."""
    spec = load_spec(config)
    if calibration is None:  # from the operator's own history, before the scratch home
        calibration = calibrate(history_runs(drover_home() / "history.db"),
                                spec.spec.provider.kind, spec.metadata.site, remembered_spec)
    data = lab_copy(spec, seed)
    lab_spec = parse_spec(data, source="prediction")
    result = Prediction(spec.name, spec.node_count, calibration.source, seed,
                        calibration=calibration.lines())
    clock = AutojumpClock()
    with realistic_profile(calibration), scratch_lab(data) as (path, home), use_clock(clock):
        lab = Datacenter(lab_spec, home / "lab.db", clock)
        with clock.participant(), measure(clock) as usage:
            deploy(config=str(path))
        run = last_run(home, spec.name, "deploy")
        started = min((s[0][1] for s in run.node_steps.values() if s), default=run.started)
        ideal, chain = ideal_deploy(lab_spec, lab)
        image = started - run.started  # what ran before the first node's pipeline
        result.phases.append(Phase("deploy", run.total, ideal + image, chain,
                                   usage.cpu_seconds, usage.wall_seconds,
                                   tasks=sum(len(s) for s in run.node_steps.values()),
                                   push_seconds=config_push(lab)))
        if upgrade is not None and upgrade_version:
            window = max_unavailable or lab_spec.spec.upgrade.max_unavailable
            since = clock.now()
            with clock.participant(), measure(clock) as usage:
                upgrade(cluster=spec.name, talos_version=upgrade_version,
                        max_unavailable=window)
            run = last_run(home, spec.name, "upgrade")
            took = node_upgrades(lab, since)
            ideal, how = ideal_upgrade(lab_spec, took, window)
            result.phases.append(Phase("upgrade", run.total, ideal, how, usage.cpu_seconds,
                                       usage.wall_seconds, "per-batch time × batches",
                                       tasks=len(took)))
    if fleet is not None:
        per_cluster = result.phases[-1].wall_seconds
        result.fleet = fleet_schedule(fleet, per_cluster)
    return result


# ---- the prediction kept beside the cluster ----------------------------------------------
def prediction_path(cluster: str) -> Path:
    return private_dir(drover_home() / "predictions") / f"{cluster_name(cluster)}.json"


def remember_prediction(prediction: Prediction) -> Path:
    """Keep the prediction for the cluster's next deploy summary (0600)."""
    path = prediction_path(prediction.cluster)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(prediction), out, indent=2)
    return path


def predicted_line(cluster: str, took: float) -> str | None:
    """'predicted 7m12s (calibrated from ...); took 7m40s (+6%)' for a deploy summary, or None
    when nothing was predicted for the cluster."""
    path = prediction_path(cluster)
    if not path.exists():
        return None
    data = json.loads(read_private(path, "prediction"))
    deploy = next((p for p in data["phases"] if p["flow"] == "deploy"), None)
    if deploy is None:
        return None
    said = deploy["wall_seconds"]
    off = f" ({(took - said) / said:+.0%})" if said else ""
    return (f"predicted {format_duration(said)} ({data['source']}); took "
            f"{format_duration(took)}{off}")
