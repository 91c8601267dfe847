"""Lab durations calibrated from the timing history of real runs, per provider and site.

A real deploy records, per node, how long provisioning and the config push took, and the
health gate's length ($DROVER_HOME/history.db). Each of those covers a group of the lab's
lifecycle steps (provision: create + boot; configure: install + reboot; health: bootstrap,
etcd join, API server, node Ready), so a group's p50 over real runs rescales its steps of
the `realistic` profile in proportion, and its p95 against its p50 sets the jitter. Only
completed deploys that ran on real infrastructure count (not the lab's emulation); a group
with no run keeps the profile's assumption, and the report says which is which.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock

from drover.lab.profiles import _table, load_profile
from drover.spec import ClusterSpec
from drover.statefile import sqlite_connect, sqlite_errors
from drover.timing import History, RunTiming, percentile

#: a group of the lab's steps, and where a real run measures it
GROUPS: dict[str, tuple[str, ...]] = {
    "provision": ("create", "boot"),
    "configure": ("install", "reboot"),
    "health": ("bootstrap", "etcd_join", "apiserver", "node_ready"),
}
#: samples a group needs before its p95 sets the jitter too
JITTER_SAMPLES = 5
_PATCHING = Lock()


@dataclass(frozen=True)
class StepStats:
    """One group measured over real runs: p50 and p95 seconds, how many runs and samples."""

    group: str
    p50: float
    p95: float
    runs: int
    samples: int


@dataclass(frozen=True)
class Calibration:
    """Durations of the realistic profile for one provider and site, and where they come from."""

    provider: str
    site: str
    durations: dict[str, float]
    jitter: float
    stats: list[StepStats] = field(default_factory=list)
    runs: int = 0

    @property
    def source(self) -> str:
        """The report line: 'calibrated from N runs (lab/default: provision, ...)' or
        'assumed: profiles.yaml'."""
        if not self.runs:
            return f"assumed: profiles.yaml (no real run of {self.provider}/{self.site} yet)"
        groups = ", ".join(s.group for s in self.stats)
        return (f"calibrated from {self.runs} run(s) of {self.provider}/{self.site} "
                f"({groups}; other steps assumed: profiles.yaml)" if len(self.stats) < len(GROUPS)
                else f"calibrated from {self.runs} run(s) of {self.provider}/{self.site}")

    def lines(self) -> list[str]:
        return [f"{s.group}: p50 {s.p50:.1f}s, p95 {s.p95:.1f}s ({s.runs} run(s), "
                f"{s.samples} sample(s))" for s in self.stats]


def real_run(run: RunTiming) -> bool:
    """A completed deploy on real infrastructure (the lab's runs say so in their note)."""
    return run.flow == "deploy" and run.outcome == "completed" \
        and not run.clock_note.startswith("lab")


def samples_of(run: RunTiming) -> dict[str, list[float]]:
    """Per group, the seconds this run measured (per node for pipeline steps), scaled."""
    out: dict[str, list[float]] = {group: [] for group in GROUPS}
    for steps in run.node_steps.values():
        for step, started, ended in steps:
            if step in out:
                out[step].append((ended - started) * run.scale)
    out["health"] += [s.seconds * run.scale for s in run.stages if s.name == "health"]
    return out


def history_runs(path: Path) -> list[RunTiming]:
    """Every run in a history file (none if it does not exist)."""
    if not Path(path).exists():
        return []
    with sqlite_errors(path):
        con = sqlite_connect(path)
        try:
            clusters = [row[0] for row in con.execute("SELECT DISTINCT cluster FROM runs")]
        except sqlite3.OperationalError:  # no runs table: nothing was ever timed
            clusters = []
        finally:
            con.close()
    history = History(path)
    return [run for cluster in clusters for run in history.runs(cluster, "deploy")]


def calibrate(runs: list[RunTiming], provider: str, site: str,
              spec_of: Callable[[str], ClusterSpec | None]) -> Calibration:
    """The realistic profile rescaled by the real runs of clusters on `provider` at `site`
    (`spec_of` names a run's cluster's spec; runs of clusters it does not know are left out)."""
    profile = load_profile("realistic")
    durations = dict(profile.durations)
    mine = []
    for run in runs:
        spec = spec_of(run.cluster) if real_run(run) else None
        if spec is not None and spec.spec.provider.kind == provider \
                and spec.metadata.site == site:
            mine.append(run)
    stats, spreads = [], []
    for group, steps in GROUPS.items():
        per_run = [samples_of(run)[group] for run in mine]
        values = sorted(v for vs in per_run for v in vs)
        if not values:
            continue
        p50, p95 = percentile(values, 50), percentile(values, 95)
        stats.append(StepStats(group, p50, p95, sum(1 for vs in per_run if vs), len(values)))
        assumed = sum(profile.durations[s] for s in steps if s != "etcd_join")
        for step in steps:
            durations[step] = profile.durations[step] * p50 / assumed if assumed else p50
        if len(values) >= JITTER_SAMPLES and p50 > 0:
            spreads.append(min(0.9, max(0.0, (p95 / p50 - 1) / 0.9)))  # uniform ±j: p95≈1+.9j
    jitter = max(spreads) if spreads else profile.jitter
    return Calibration(provider, site, durations, jitter, stats,
                       runs=len({run.run_id or id(run) for run in mine if samples_of(run)}))


@contextmanager
def realistic_profile(calibration: Calibration) -> Iterator[None]:
    """Within this block the lab's `realistic` profile has the calibrated durations (for a
    prediction in this process; one at a time). A lab opened inside keeps them."""
    with _PATCHING:
        table = _table()
        saved = dict(table["realistic"])
        table["realistic"] = {**calibration.durations, "jitter": calibration.jitter}
        try:
            yield
        finally:
            table["realistic"] = saved


__all__ = ["Calibration", "StepStats", "calibrate", "history_runs", "realistic_profile"]
