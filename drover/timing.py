"""Timing metrics: stage timers, run records, each flow's own target and baseline
(`targets_for`), the verdict against them, and the history of runs in SQLite
($DROVER_HOME/history.db, 0600).

Durations come from the clock the run used. On the lab's realistic profile,
compressed by a declared factor, the report scales durations back up and says so.
Every run is recorded when it starts (outcome "running", with its pid and host) and
updated when it ends, so a run killed on the way still leaves a row, read back as
"killed"; only a completed run is judged against the target.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from drover.lab.clock import Clock
from drover.lease import process_alive
from drover.statefile import sqlite_connect, sqlite_errors

if TYPE_CHECKING:
    from drover.spec import ClusterSpec

#: the flows drover times, each judged against its own target and baseline
TIMED_FLOWS = ("deploy", "upgrade", "replace", "recover")

#: a run still "running" after this long (wall clock) is taken for killed, whatever its pid
STALE_AFTER = 24 * 3600.0


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(frozen=True)
class Targets:
    """What one run of a flow is judged against: its target, and the baseline (the tool drover
    replaces: `baseline_name`, where the number comes from: `baseline_source`), if any."""

    target_seconds: float
    baseline_seconds: float | None = None
    baseline_name: str = ""
    baseline_source: str = ""


def targets_for(spec: ClusterSpec, flow: str, nodes: int) -> Targets:
    """The flow's own target and baseline from `spec.targets`: deploy, replace and recover as
    given; upgrade per node times `nodes` (at least one); any other flow has the deploy's."""
    targets = spec.spec.targets
    if flow == "upgrade":
        per_node, count = targets.upgrade, max(1, nodes)
        baseline = per_node.baseline_per_node_minutes
        return Targets(per_node.per_node_target_minutes * 60 * count,
                       baseline * 60 * count if baseline is not None else None,
                       per_node.baseline_name, per_node.baseline_source)
    chosen = {"replace": targets.replace, "recover": targets.recover}.get(flow, targets.deploy)
    baseline = chosen.baseline_minutes
    return Targets(chosen.target_minutes * 60, baseline * 60 if baseline is not None else None,
                   chosen.baseline_name, chosen.baseline_source)


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
    baseline_seconds: float | None = 2700.0
    baseline_name: str = ""       # e.g. "Kubespray upgrade-cluster.yml", named in the verdict
    baseline_source: str = ""     # where the baseline's number comes from (a citation)
    scale: float = 1.0            # multiply measured durations by this (compressed lab time)
    clock_note: str = ""          # e.g. "lab, realistic profile compressed 60x"
    run_id: str | None = None
    stages: list[StageTiming] = field(default_factory=list)
    #: per-node pipelines: node -> [(step, started, ended)], in the order they ran
    node_steps: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """The run's duration, scaled to real-world time where the lab compressed it (0 for a
        run with no end recorded)."""
        return max(0.0, self.ended - self.started) * self.scale

    def critical_node(self) -> str | None:
        """With per-node pipelines: the node whose chain ended last (it set the run's pace)."""
        ends = {node: steps[-1][2] for node, steps in self.node_steps.items() if steps}
        return max(ends, key=lambda n: (ends[n], n)) if ends else None

    def critical_seconds(self) -> float:
        """The critical node's own chain, start of its first step to end of its last (scaled):
        the physical limit a run with no barriers can reach."""
        node = self.critical_node()
        if node is None:
            return sum(s.slowest_seconds or 0.0 for s in self.stages) * self.scale
        steps = self.node_steps[node]
        return (steps[-1][2] - steps[0][1]) * self.scale

    def critical_path(self) -> str:
        """The critical node's chain of steps; without pipelines, the chain of each stage's
        slowest node (the stages ran one after another)."""
        node = self.critical_node()
        if node is not None:
            chain = " → ".join(f"{step} {format_duration((end - start) * self.scale)}"
                               for step, start, end in self.node_steps[node])
            return f"{node}: {chain}"
        parts = [f"{s.name}: {s.slowest_node} {format_duration(s.slowest_seconds * self.scale)}"
                 for s in self.stages if s.slowest_node and s.slowest_seconds is not None]
        return " → ".join(parts) or "-"

    def judge(self, targets: Targets) -> None:
        """Judge this run against `targets` (the flow's own, from `targets_for`)."""
        self.target_seconds = targets.target_seconds
        self.baseline_seconds = targets.baseline_seconds
        self.baseline_name = targets.baseline_name
        self.baseline_source = targets.baseline_source

    def verdict(self) -> str:
        """Against target and baseline for a completed run; any other run is not judged. The
        short verdict comes first (cards cut the rest off), the baseline after it."""
        if self.outcome == "completed":
            return verdict(self.total, self.target_seconds, self.baseline_seconds,
                           self.baseline_name)
        return self.short_verdict()

    def short_verdict(self) -> str:
        """E.g. '4m12s — within the 10m target', or why the run is not judged."""
        if self.outcome == "completed":
            return short_verdict(self.total, self.target_seconds)
        if self.outcome == "running":
            return "still running — not judged against the target"
        if self.outcome == "killed":
            last = max((s.ended for s in self.stages), default=self.started)
            seen = (f" after at least {format_duration((last - self.started) * self.scale)}"
                    if last > self.started else "")
            return f"killed{seen} — not judged against the target"
        return f"{self.outcome} after {format_duration(self.total)} — not judged against the target"

    def rows(self) -> list[dict[str, str]]:
        """One row per stage and the total, for the table artifact and the terminal."""
        from drover.timing_render import stage_rows  # it renders this class

        return stage_rows(self)

    def markdown(self, chart: str | None = None) -> str:
        """The run's summary (verdict first, stages, per-node chains); `chart`: an image URL."""
        from drover.timing_render import summary_markdown

        return summary_markdown(self, chart)


def short_verdict(total: float, target: float) -> str:
    """E.g. '7m41s — within the 10m target', '11m40s — over the 10m target by 1m40s'."""
    goal = format_duration(target)
    within = (f"within the {goal} target" if total <= target
              else f"over the {goal} target by {format_duration(total - target)}")
    return f"{format_duration(total)} — {within}"


def verdict(total: float, target: float, baseline: float | None, name: str = "") -> str:
    """E.g. '7m41s — within the 10m target; 5.9x faster than the 45m Kubespray cluster.yml
    baseline' (no baseline: the short verdict alone)."""
    if baseline is None:
        return short_verdict(total, target)
    named = f"the {format_duration(baseline)} {name} baseline" if name else (
        f"the {format_duration(baseline)} baseline")
    if total <= 0:
        against = f"{named} does not apply to an instant run"
    elif total < baseline:
        against = f"{baseline / total:.1f}x faster than {named}"
    else:
        against = f"no faster than {named}"
    return f"{short_verdict(total, target)}; {against}"


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

    def pipelines(self, spans: dict[str, dict[str, tuple[float, float]]],
                  order: list[str]) -> None:
        """Record per-node pipelines ({node: {step: (started, ended)}}) and one stage row per
        step name in `order`: from its first start to its last end, with its slowest node."""
        for node, steps in spans.items():
            self.run.node_steps[node] = sorted(((name, *span) for name, span in steps.items()),
                                               key=lambda s: s[1])
        for name in order:
            ran = {node: steps[name] for node, steps in spans.items() if name in steps}
            if not ran:
                continue
            stage = StageTiming(name, min(s for s, _ in ran.values()),
                                max(e for _, e in ran.values()))
            self.nodes(stage, {node: end - start for node, (start, end) in ran.items()})
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
    """Every timed run, kept in SQLite for trends (`drover report`): begun, then recorded."""

    def __init__(self, path: Path, wall: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.wall = wall  # real time, for telling a killed run from a long one
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                        " cluster TEXT, flow TEXT, started REAL, outcome TEXT, total REAL,"
                        " record TEXT)")
            have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
            for column, decl in (("run_id", "TEXT"), ("pid", "INTEGER"), ("host", "TEXT"),
                                 ("began_at", "REAL")):
                if column not in have:  # a history made before runs were begun
                    con.execute(f"ALTER TABLE runs ADD COLUMN {column} {decl}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite_connect(self.path, timeout=30)  # 0600 in a 0700 folder
        con.row_factory = sqlite3.Row
        try:
            with sqlite_errors(self.path), con:  # commits on success
                yield con
        finally:
            con.close()

    def begin(self, run: RunTiming) -> str:
        """Record `run` as running (this process, this host) before it does anything, so a
        run killed on the way still leaves a row; returns its run_id (made if it had none)."""
        run.run_id = run.run_id or uuid.uuid4().hex
        with self._connect() as con:
            con.execute("INSERT INTO runs (cluster, flow, started, outcome, total, record, "
                        "run_id, pid, host, began_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run.cluster, run.flow, run.started, "running", 0.0,
                         json.dumps(asdict(run)), run.run_id, os.getpid(),
                         socket.gethostname(), self.wall()))
        return run.run_id

    def record(self, run: RunTiming) -> None:
        """Store the run as it ended: the row `begin` made for its run_id, or a new one."""
        values = (run.cluster, run.flow, run.started, run.outcome, run.total,
                  json.dumps(asdict(run)))
        with self._connect() as con:
            updated = run.run_id is not None and con.execute(
                "UPDATE runs SET cluster=?, flow=?, started=?, outcome=?, total=?, record=? "
                "WHERE run_id=?", (*values, run.run_id)).rowcount
            if not updated:
                con.execute("INSERT INTO runs (cluster, flow, started, outcome, total, record, "
                            "run_id) VALUES (?, ?, ?, ?, ?, ?, ?)", (*values, run.run_id))

    def runs(self, cluster: str, flow: str | None = None) -> list[RunTiming]:
        """The cluster's runs in order; one still "running" whose process is gone (same host,
        pid not alive) or that began over a day ago is shown as "killed"."""
        query = ("SELECT record, outcome, pid, host, began_at FROM runs WHERE cluster=?"
                 + (" AND flow=?" if flow else ""))
        args = (cluster, flow) if flow else (cluster,)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY id", args).fetchall()
        out = []
        for row in rows:
            data = json.loads(row["record"])
            data["stages"] = [StageTiming(**s) for s in data["stages"]]
            run = RunTiming(**data)
            if row["outcome"] == "running" and self._gone(row["pid"], row["host"],
                                                          row["began_at"]):
                run.outcome = "killed"
            out.append(run)
        return out

    def clusters(self) -> list[str]:
        """Every cluster with a run recorded, sorted."""
        with self._connect() as con:
            return [row[0] for row in con.execute("SELECT DISTINCT cluster FROM runs ORDER BY 1")]

    def _gone(self, pid: int | None, host: str | None, began_at: float | None) -> bool:
        if began_at is None or self.wall() - began_at > STALE_AFTER:
            return True
        return host == socket.gethostname() and pid is not None and not process_alive(pid)


def percentile(values: list[float], pct: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]
