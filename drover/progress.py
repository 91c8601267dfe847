"""Run progress: one board per run saying which stage each node is in, for the UI's progress
artifact and the CLI's live view. A board counts units (one per node of a node stage, one per
cluster stage) and reports the share done (never going back), a one-line summary and a row
per node; every change calls its listeners (pipelines run in threads: the board is
thread-safe, listeners run outside its lock, one change at a time). `watch` lets a process
(the CLI running flows in-process) see every board begun while it is open; `activate` makes a
board the context's current one, so code deep in a run (the health gate) can feed it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from drover.clock import Clock

State = Literal["waiting", "running", "done", "failed"]
STATES: tuple[State, ...] = ("waiting", "running", "done", "failed")
Listener = Callable[["RunProgress"], None]
MARKS = {"running": "…", "done": "✓", "failed": "✗"}

_log = logging.getLogger(__name__)
_current: ContextVar[RunProgress | None] = ContextVar("drover_progress", default=None)
_watchers: list[Listener] = []
_watchers_lock = threading.Lock()


@dataclass
class Cell:
    """One node in one stage (node None: the cluster's own stage)."""

    node: str | None
    stage: str
    state: State = "waiting"
    started: float | None = None
    ended: float | None = None
    seq: int = 0  # the change that last touched it: the latest cell of a node has the highest


class RunProgress:
    """The progress of one run: cluster, flow, stages in order, nodes, and who is where."""

    def __init__(self, cluster: str, flow: str, clock: Clock, nodes: Iterable[str],
                 stages: Iterable[str], plan: Mapping[str, Iterable[str]] | None = None,
                 scale: float = 1.0) -> None:
        self.cluster, self.flow, self.clock, self.scale = cluster, flow, clock, scale
        self.nodes = list(nodes)
        self.stages = list(stages)
        self.outcome: str | None = None
        self._planned: dict[str, list[str]] = {s: list(n) for s, n in (plan or {}).items()}
        self._cells: dict[tuple[str | None, str], Cell] = {}
        self._listeners: list[Listener] = []
        self._high = 0.0
        self._seq = 0
        self._lock = threading.RLock()
        self._notifying = threading.RLock()

    # ---- changes --------------------------------------------------------------------------
    def plan(self, stage: str, nodes: Iterable[str]) -> None:
        """Plan `stage` as a node stage over `nodes` (a unit each); unplanned: one unit."""
        with self._lock:
            self._add_stage(stage)
            self._planned[stage] = list(nodes)
        self._notify()

    def node(self, name: str, stage: str, state: State) -> None:
        """Node `name` is `state` in `stage`."""
        self._set(name, stage, state)

    def stage(self, name: str, state: State) -> None:
        """The cluster-level stage `name` is `state` (image, health, kubernetes...); a node
        stage marked done here counts every planned unit done."""
        self._set(None, name, state)

    def finish(self, outcome: str) -> None:
        """The run ended ("completed", "failed"...); a completed run is at 100%."""
        with self._lock:
            self.outcome = outcome
            if outcome == "completed":
                self._high = 100.0
        self._notify()

    def listen(self, callback: Listener) -> Callable[[], None]:
        """Call `callback(board)` on every change from now on; returns how to stop."""
        with self._lock:
            self._listeners.append(callback)

        def stop() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)
        return stop

    def _set(self, node: str | None, stage: str, state: State) -> None:
        if state not in STATES:
            raise ValueError(f"progress state {state!r}: one of {', '.join(STATES)}")
        with self._lock:
            self._add_stage(stage)
            cell = self._cells.setdefault((node, stage), Cell(node, stage))
            if node is not None and node not in self.nodes:
                self.nodes.append(node)
            now = self.clock.now()
            if state == "running" and cell.state != "running":
                cell.started, cell.ended = now, None
            elif state in ("done", "failed"):
                cell.started = now if cell.started is None else cell.started
                cell.ended = now
            cell.state = state
            self._seq += 1
            cell.seq = self._seq
        self._notify()

    def _add_stage(self, stage: str) -> None:
        if stage not in self.stages:
            self.stages.append(stage)

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        with self._notifying:  # one change at a time, outside the board's lock
            for callback in listeners:
                try:
                    callback(self)
                except Exception:  # a broken view must never fail the run it shows
                    _log.exception("progress listener %r failed", callback)

    # ---- reading --------------------------------------------------------------------------
    def _units(self, stage: str) -> tuple[float, int]:
        """(units done, units planned) of one stage."""
        cells = [c for (node, s), c in self._cells.items() if s == stage and node is not None]
        nodes = set(self._planned.get(stage, [])) | {c.node for c in cells}
        own = self._cells.get((None, stage))
        if not nodes:
            return (1.0 if own is not None and own.state == "done" else 0.0), 1
        if own is not None and own.state == "done":
            return float(len(nodes)), len(nodes)
        return float(sum(1 for c in cells if c.state == "done")), len(nodes)

    def percent(self) -> float:
        """The share of planned units done, 0..100; it never goes back (a stage planned
        late cannot undo what the UI already showed)."""
        with self._lock:
            counted = [self._units(s) for s in self.stages]
            done, total = sum(d for d, _ in counted), sum(t for _, t in counted)
            self._high = max(self._high, 100.0 * done / total if total else 0.0)
            return round(self._high, 1)

    def stage_state(self, stage: str) -> State:
        """A stage's state: its own if set, else from its nodes (failed > running > done)."""
        with self._lock:
            own = self._cells.get((None, stage))
            states = {c.state for (n, s), c in self._cells.items() if s == stage and n}
            if own is not None and (own.state != "waiting" or not states):
                return own.state
            done, total = self._units(stage)
            for state in ("failed", "running"):
                if state in states:
                    return state
            if states and done >= total:
                return "done"
            return "running" if "done" in states else "waiting"

    def summary(self) -> str:
        """One short line: each stage begun, e.g. 'image ✓ · provision 5/5 · configure 3/5';
        prefixed with the outcome once the run ended."""
        with self._lock:
            parts = []
            for stage in self.stages:
                state = self.stage_state(stage)
                if state == "waiting":
                    continue
                done, total = self._units(stage)
                per_node = bool(self._planned.get(stage)) or any(
                    s == stage and n for n, s in self._cells)
                mark = f" {MARKS['failed']}" if state == "failed" else ""
                parts.append(f"{stage} {int(done)}/{total}{mark}" if per_node
                             else f"{stage} {MARKS[state]}")
            line = " · ".join(parts) or "starting"
            return f"{self.outcome}: {line}" if self.outcome else line

    def cells(self) -> list[Cell]:
        """Every (node, stage) seen, in the order they last changed (copies)."""
        with self._lock:
            return [Cell(c.node, c.stage, c.state, c.started, c.ended, c.seq)
                    for c in sorted(self._cells.values(), key=lambda c: c.seq)]

    def elapsed(self, cell: Cell) -> float:
        """Seconds a cell has been running, or ran (scaled like the run's timing)."""
        if cell.started is None:
            return 0.0
        end = cell.ended if cell.ended is not None else self.clock.now()
        return max(0.0, end - cell.started) * self.scale

    def rows(self) -> list[dict[str, object]]:
        """One row per node (its latest stage), the cluster's own stage first, named after the
        cluster: node, stage, state, elapsed (seconds on the run's clock)."""
        with self._lock:
            latest: dict[str | None, Cell] = {cell.node: cell for cell in self.cells()}
            rows: list[dict[str, object]] = []
            for node in [None, *self.nodes]:
                cell = latest.get(node)
                if cell is not None:
                    rows.append({"node": node or self.cluster, "stage": cell.stage,
                                 "state": cell.state, "elapsed": self.elapsed(cell)})
                elif node is not None:
                    rows.append({"node": node, "stage": "", "state": "waiting", "elapsed": 0.0})
            return rows


def begin(cluster: str, flow: str, clock: Clock, nodes: list[str], stages: list[str], *,
          plan: Mapping[str, Iterable[str]] | None = None, scale: float = 1.0) -> RunProgress:
    """A new board, shown to every watcher open in this process (see `watch`)."""
    board = RunProgress(cluster, flow, clock, nodes, stages, plan=plan, scale=scale)
    with _watchers_lock:
        watchers = list(_watchers)
    for callback in watchers:
        board.listen(_while_watched(callback))
    board._notify()
    return board


def _while_watched(callback: Listener) -> Listener:
    def forward(board: RunProgress) -> None:
        with _watchers_lock:
            open_ = callback in _watchers
        if open_:
            callback(board)
    return forward


@contextmanager
def watch(callback: Listener) -> Iterator[None]:
    """While open, every board begun in this process calls `callback(board)` when begun and on
    each change."""
    with _watchers_lock:
        _watchers.append(callback)
    try:
        yield
    finally:
        with _watchers_lock:
            _watchers.remove(callback)


def activate(board: RunProgress) -> None:
    """Make `board` the current one in this context (and the threads that copy it)."""
    _current.set(board)


def current() -> RunProgress | None:
    """The board of the run this context belongs to, while that run has not ended."""
    board = _current.get()
    return board if board is not None and board.outcome is None else None


@contextmanager
def using(board: RunProgress) -> Iterator[RunProgress]:
    """`board` current for the duration of the block (tests, library callers)."""
    token = _current.set(board)
    try:
        yield board
    finally:
        _current.reset(token)
