"""Clocks: where drover and the lab read the time and wait for it.

Waiting code never calls time.sleep; it asks a clock to `sleep_until` the next
moment something can change. SystemClock is wall time; ManualClock is an
in-memory clock that tests advance; the lab's VirtualClock (in store.py) is a
persisted clock whose time moves only when someone waits, so a whole deploy
under Prefect runs in milliseconds with no real sleep.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod


class Clock(ABC):
    """Seconds since the epoch, and a way to wait for a moment."""

    #: whether durations measured on this clock are wall-clock durations
    real: bool = True

    @abstractmethod
    def now(self) -> float: ...

    @abstractmethod
    def sleep_until(self, moment: float) -> None:
        """Return once now() >= moment."""

    def sleep(self, seconds: float) -> None:
        self.sleep_until(self.now() + max(0.0, seconds))


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()

    def sleep_until(self, moment: float) -> None:
        delay = moment - time.time()
        if delay > 0:
            time.sleep(delay)


class ManualClock(Clock):
    """A clock that moves only when told to; waiting jumps straight to the moment."""

    real = False

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def sleep_until(self, moment: float) -> None:
        # max(), not +=: two threads waiting for their own moments end at the later
        # of the two, as they would on a real clock.
        with self._lock:
            self._now = max(self._now, moment)
