"""Clocks: where drover reads the time and waits for it, and what its own CPU costs.

Waiting code never calls time.sleep; it asks a clock to `sleep_until` the next moment
something can change. SystemClock is wall time; ManualClock is an in-memory clock tests
move by hand; AutojumpClock (autojump.py) is exact virtual time: it jumps only when every
thread of a run waits, so parallel waits end in the right order. Code that runs work in
other threads announces it (`expect`, `wait_for`, `blocked`); on clocks other than the
autojump clock these are no-ops, so callers never ask which clock they hold. `use_clock`
installs a clock for everything opened in its context (Prefect copies the context into
its task threads). drover's own CPU time is measured apart on the wall clock
(`cpu_seconds`, `measure`), never scaled with virtual time.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Ticket:
    """Work announced before it starts in another thread; on most clocks a no-op."""

    label = ""
    closed = True

    def carried(self) -> AbstractContextManager[None]:
        """Submit the work inside this: contexts copied then carry the ticket along."""
        return nullcontext()

    def close(self, _future: object = None) -> None:
        """The work ended (usable as a future's done callback)."""


class Clock(ABC):
    """Seconds since the epoch, a way to wait for a moment, and how threads take part."""

    #: whether durations measured on this clock are wall-clock durations
    real: bool = True

    @abstractmethod
    def now(self) -> float: ...

    @abstractmethod
    def sleep_until(self, moment: float) -> None:
        """Return once now() >= moment."""

    def sleep(self, seconds: float) -> None:
        self.sleep_until(self.now() + max(0.0, seconds))

    # ---- taking part: meaningful on AutojumpClock only ----------------------------
    def participant(self, ticket: Ticket | None = None) -> AbstractContextManager[None]:
        """This thread takes part in the run while inside (re-entrant)."""
        return nullcontext()

    def expect(self, label: str) -> Ticket:
        """Announce work about to start in another thread (time holds until it ends)."""
        return Ticket()

    def blocked(self) -> AbstractContextManager[None]:
        """This participant waits on something outside the clock (a future, a lock)."""
        return nullcontext()

    def wait_for(self, tickets: Iterable[Ticket], first: bool = False) -> list[Ticket]:
        """Wait (not holding time) until every ticket, or with `first` one, is closed;
        return the closed ones. Real waiting on the futures themselves follows."""
        return [t for t in tickets if t.closed]

    def submit(self, executor: Executor, fn: Callable[..., T], *args: Any,
               label: str | None = None) -> Future[T]:
        """Run fn(*args) on a concurrent.futures executor as a participant of this clock,
        announced before it is submitted; its ticket closes when fn returns or raises."""
        ticket = self.expect(label or getattr(fn, "__name__", "work"))

        def run() -> T:
            with self.participant(ticket):
                return fn(*args)

        try:
            return executor.submit(run)
        except BaseException:
            ticket.close()
            raise


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()

    def sleep_until(self, moment: float) -> None:
        delay = moment - time.time()
        if delay > 0:
            time.sleep(delay)


class ManualClock(Clock):
    """A clock that moves only when told to; waiting jumps straight to the moment.

    Single-threaded tests only: two threads waiting run ahead of each other (use
    AutojumpClock for parallel waits).
    """

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
        with self._lock:
            self._now = max(self._now, moment)


# ---- the clock of this context ------------------------------------------------------
_INSTALLED: ContextVar[Clock | None] = ContextVar("drover_clock", default=None)


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Within this context (and contexts copied from it, such as Prefect's task threads)
    infrastructure opened without a clock uses `clock`."""
    token = _INSTALLED.set(clock)
    try:
        yield clock
    finally:
        _INSTALLED.reset(token)


def installed_clock() -> Clock | None:
    """The clock `use_clock` installed in this context, if any."""
    return _INSTALLED.get()


def current_clock() -> Clock:
    """The installed clock, or wall time."""
    return _INSTALLED.get() or SystemClock()


# ---- drover's own CPU time, on the wall clock ----------------------------------------
def cpu_seconds() -> float:
    """CPU seconds this process has used (all threads, user + system)."""
    return time.process_time()


def thread_cpu_seconds() -> float:
    """CPU seconds the calling thread has used."""
    return time.thread_time()


@dataclass
class Usage:
    """What a piece of work cost: wall seconds, process CPU seconds, and the virtual
    seconds that passed on its clock (equal to wall on a real clock)."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    virtual_seconds: float = 0.0


@contextmanager
def measure(clock: Clock | None = None) -> Iterator[Usage]:
    """Measure the block: wall and CPU time by the machine, virtual time by `clock`."""
    usage = Usage()
    clock = clock or current_clock()
    wall, cpu, virtual = time.perf_counter(), time.process_time(), clock.now()
    try:
        yield usage
    finally:
        usage.wall_seconds = time.perf_counter() - wall
        usage.cpu_seconds = time.process_time() - cpu
        usage.virtual_seconds = clock.now() - virtual


__all__ = ["AutojumpClock", "Clock", "ManualClock", "SystemClock", "Ticket", "Usage",
           "cpu_seconds", "current_clock", "installed_clock", "measure", "thread_cpu_seconds",
           "use_clock"]

from drover.autojump import AutojumpClock  # noqa: E402  (autojump.py builds on the above)
