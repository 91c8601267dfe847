"""Step timing on the real path: how long each provider call took, per node and step, on the
provider's clock, so a slow step names itself. Providers time their calls with
`timed(cluster, node, step, clock)` (or `record` for a duration measured elsewhere); a
step shared by a host's nodes (an SSH connection, a boot-file upload) is recorded under
the host's label. The records of a process are kept per cluster, thread-safe, until the
orchestrator takes them with `drain(cluster)` and renders them with `rows` or `lines`.
With $DROVER_STEPS_FILE set, each step is also appended there as a JSON line (for
bench/libvirt.py, which watches a `drover deploy` from outside its process).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from drover.clock import Clock

#: the steps of the libvirt path, in the order a node meets them (others may be recorded)
ORDER = ("ssh connect", "upload", "cidata build", "qemu-img", "cidata", "define", "start",
         "first console line", "address")


@dataclass(frozen=True)
class StepTime:
    """One timed provider call: `node` is a node's name, or a host's label for a host step."""

    node: str
    step: str
    started: float      # on the provider's clock
    seconds: float
    ok: bool = True     # False: the call raised


class StepRecorder:
    """Step times of one process, per cluster; threads record at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: dict[str, list[StepTime]] = {}

    def record(self, cluster: str, step: StepTime) -> None:
        with self._lock:
            self._steps.setdefault(cluster, []).append(step)
            if path := os.environ.get("DROVER_STEPS_FILE"):
                with open(path, "a") as out:
                    out.write(json.dumps({"cluster": cluster, **asdict(step)}) + "\n")

    @contextmanager
    def timed(self, cluster: str, node: str, step: str, clock: Clock) -> Iterator[None]:
        """Time the block as `step` of `node`; recorded (ok=False) when it raises too."""
        started = clock.now()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record(cluster, StepTime(node, step, started, clock.now() - started, ok))

    def drain(self, cluster: str) -> list[StepTime]:
        """The cluster's step times so far, in the order they started; forgotten here."""
        with self._lock:
            taken = self._steps.pop(cluster, [])
        return sorted(taken, key=lambda s: s.started)

    def peek(self, cluster: str) -> list[StepTime]:
        with self._lock:
            return sorted(self._steps.get(cluster, []), key=lambda s: s.started)


_RECORDER = StepRecorder()
record = _RECORDER.record
timed = _RECORDER.timed
drain = _RECORDER.drain
peek = _RECORDER.peek


def rows(steps: list[StepTime]) -> list[dict[str, object]]:
    """The step times as JSON-ready dicts (for the run's timing artifact)."""
    return [asdict(s) for s in steps]


def totals(steps: list[StepTime]) -> dict[str, dict[str, float]]:
    """Per step: calls, total seconds, slowest seconds, and the median of a call."""
    by_step: dict[str, list[float]] = {}
    for s in steps:
        by_step.setdefault(s.step, []).append(s.seconds)
    known = [k for k in ORDER if k in by_step] + sorted(k for k in by_step if k not in ORDER)
    return {k: {"calls": len(by_step[k]), "total": sum(by_step[k]), "max": max(by_step[k]),
                "median": sorted(by_step[k])[len(by_step[k]) // 2]} for k in known}


def lines(steps: list[StepTime]) -> list[str]:
    """One line per node and step, the slowest call of each step marked (for `deploy -v`)."""
    if not steps:
        return []
    origin = min(s.started for s in steps)
    slowest = {k: v["max"] for k, v in totals(steps).items()}
    width = max(len(s.node) for s in steps)
    out = []
    for s in steps:
        mark = "  <- slowest" if s.seconds == slowest[s.step] and len(steps) > 1 else ""
        failed = "  FAILED" if not s.ok else ""
        out.append(f"{s.node:<{width}}  {s.step:<18} +{s.started - origin:7.3f}s "
                   f"{s.seconds:7.3f}s{failed}{mark}")
    return out


__all__ = ["ORDER", "StepRecorder", "StepTime", "drain", "lines", "peek", "record", "rows",
           "timed", "totals"]
