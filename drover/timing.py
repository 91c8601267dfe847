"""Timing metrics: stage timers, run records, the verdict against target and baseline,
and the history of runs in SQLite ($DROVER_HOME/history.db).

Durations come from the clock the run used. On the lab's realistic profile,
compressed by a declared factor, the report scales durations back up and says so.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from drover.lab.clock import Clock


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class StageTiming:
    name: str
    started: float
    ended: float
    nodes: int = 0
    slowest_node: str | None = None
    slowest_seconds: float | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class RunTiming:
    cluster: str
    flow: str
    started: float
    ended: float = 0.0
    outcome: str = "running"
    target_seconds: float = 600.0
    baseline_seconds: float = 2700.0
    scale: float = 1.0            # multiply measured durations by this (compressed lab time)
    clock_note: str = ""          # e.g. "lab, realistic profile compressed 60x"
    run_id: str | None = None
    stages: list[StageTiming] = field(default_factory=list)

    @property
    def total(self) -> float:
        """The run's duration, scaled to real-world time where the lab compressed it."""
        return (self.ended - self.started) * self.scale

    def critical_path(self) -> str:
        """The chain of slowest nodes through the stages (the stages run one after another)."""
        parts = [f"{s.name}: {s.slowest_node} {format_duration(s.slowest_seconds * self.scale)}"
                 for s in self.stages if s.slowest_node and s.slowest_seconds is not None]
        return " → ".join(parts) or "-"

    def verdict(self) -> str:
        return verdict(self.total, self.target_seconds, self.baseline_seconds)

    def rows(self) -> list[dict[str, str]]:
        """One row per stage, for the table artifact and the terminal."""
        def slowest(s: StageTiming) -> str:
            if not s.slowest_node or s.slowest_seconds is None:
                return "-"
            return f"{s.slowest_node} ({format_duration(s.slowest_seconds * self.scale)})"

        rows = [{"stage": s.name, "duration": format_duration(s.seconds * self.scale),
                 "nodes": str(s.nodes or "-"), "slowest node": slowest(s)} for s in self.stages]
        rows.append({"stage": "total", "duration": format_duration(self.total), "nodes": "",
                     "slowest node": ""})
        return rows

    def markdown(self) -> str:
        table = "\n".join(f"| {r['stage']} | {r['duration']} | {r['nodes']} | {r['slowest node']} |"
                          for r in self.rows())
        note = f"\n\n_Times: {self.clock_note}._" if self.clock_note else ""
        return (f"# {self.flow} {self.cluster}: {self.outcome}\n\n**{self.verdict()}**\n\n"
                f"| stage | duration | nodes | slowest node |\n|---|---|---|---|\n{table}\n\n"
                f"Critical path: {self.critical_path()}{note}\n")


def verdict(total: float, target: float, baseline: float) -> str:
    """E.g. '7m41s — within the 10m target; 5.9x faster than the 45m baseline'."""
    goal = format_duration(target)
    within = (f"within the {goal} target" if total <= target
              else f"over the {goal} target by {format_duration(total - target)}")
    if total <= 0:
        against = f"the {format_duration(baseline)} baseline does not apply to an instant run"
    elif total < baseline:
        against = f"{baseline / total:.1f}x faster than the {format_duration(baseline)} baseline"
    else:
        against = f"no faster than the {format_duration(baseline)} baseline"
    return f"{format_duration(total)} — {within}; {against}"


class StageTimer:
    """Times the stages of one run on the run's clock."""

    def __init__(self, run: RunTiming, clock: Clock) -> None:
        self.run = run
        self.clock = clock

    @contextmanager
    def stage(self, name: str) -> Iterator[StageTiming]:
        now = self.clock.now()
        stage = StageTiming(name, now, now)
        try:
            yield stage
        finally:
            stage.ended = self.clock.now()
            self.run.stages.append(stage)

    @staticmethod
    def nodes(stage: StageTiming, per_node: dict[str, float]) -> None:
        """Record how long each node took in a parallel stage; keep the slowest."""
        stage.nodes = len(per_node)
        if per_node:
            stage.slowest_node, stage.slowest_seconds = max(per_node.items(), key=lambda kv: kv[1])

    def finish(self, outcome: str) -> RunTiming:
        self.run.ended = self.clock.now()
        self.run.outcome = outcome
        return self.run


class History:
    """Every timed run, kept in SQLite for trends (`drover report`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                        " cluster TEXT, flow TEXT, started REAL, outcome TEXT, total REAL,"
                        " record TEXT)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            with con:  # commits on success
                yield con
        finally:
            con.close()

    def record(self, run: RunTiming) -> None:
        with self._connect() as con:
            con.execute("INSERT INTO runs (cluster, flow, started, outcome, total, record) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (run.cluster, run.flow, run.started,
                                                      run.outcome, run.total,
                                                      json.dumps(asdict(run))))

    def runs(self, cluster: str, flow: str | None = None) -> list[RunTiming]:
        query = "SELECT record FROM runs WHERE cluster=?" + (" AND flow=?" if flow else "")
        args = (cluster, flow) if flow else (cluster,)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY id", args).fetchall()
        out = []
        for row in rows:
            data = json.loads(row["record"])
            data["stages"] = [StageTiming(**s) for s in data["stages"]]
            out.append(RunTiming(**data))
        return out


def percentile(values: list[float], pct: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]
