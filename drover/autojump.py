"""Exact virtual time: a clock that jumps only when every participant of a run waits.

Discrete-event time, like trio's MockClock(autojump_threshold=0). A participant is a
unit of work: a thread inside `participant()`, or a ticket from `expect()` (work
announced in one thread before it starts in another, so time never jumps between a
submit and the body starting). Each unit is running, sleeping (in sleep_until) or
blocked (in `blocked()` or `wait_for`). While any unit runs, time stands still; when
none does, time jumps to the earliest wake-up and exactly the units due then run again,
so parallel waits end in order and a wait lasts exactly its virtual duration.

Rules for callers. (1) A thread that waits on anything but the clock (a future, a
lock, a queue) while taking part says so: `with clock.blocked(): future.result()`, or
better `clock.wait_for(tickets)`, which the clock itself ends the moment the tickets
close (no jump can slip in between). (2) Close each ticket when its work ends
(`future.add_done_callback(ticket.close)`, or run the body in `participant(ticket)`).
(3) Never announce more work than can start without time passing: tickets for tasks
queued behind a full thread pool hold time still while the pool's tasks sleep. (4) A
thread that takes no part may still sleep_until: it waits for its moment without
holding time (ManualClock's behaviour for single-threaded callers). If every unit is
blocked in `wait_for` with no wake-up pending, or time stands still longer than
`stall_seconds` of wall time while someone waits, the waiters get a DroverError naming
the units, never a silent hang.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

from drover.clock import Clock, Ticket
from drover.errors import DroverError

_CARRIED: ContextVar[Unit | None] = ContextVar("drover_ticket", default=None)


class Unit(Ticket):
    """One participant: a thread, or announced work (a ticket) until it is closed."""

    def __init__(self, clock: AutojumpClock, label: str) -> None:
        self.clock = clock
        self.label = label
        self.state = "running"      # running | sleeping | blocked | waiting
        self.closed = False
        self.thread: int | None = None
        self.moment = 0.0
        self.awaits: tuple[list[Unit], bool] | None = None  # wait_for: tickets, first
        self.error: str | None = None  # set when its wait can never end
        self.wake = threading.Condition(clock._lock)

    def carried(self) -> AbstractContextManager[None]:
        return self.clock._carry(self)

    def close(self, _future: object = None) -> None:
        self.clock._close(self)

    def __repr__(self) -> str:
        return f"{self.label} ({self.state})"


class AutojumpClock(Clock):
    """Virtual time that jumps to the next wake-up once no participant is running."""

    real = False

    def __init__(self, start: float = 1_700_000_000.0, stall_seconds: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._now = start
        self._running = 0
        self._units: set[Unit] = set()
        self._sleepers: list[tuple[float, int, Unit]] = []
        self._seq = itertools.count()
        self._local = threading.local()
        self._progress = 0          # bumped on every change, for stall detection
        self.stall_seconds = stall_seconds
        self.jumps = 0

    def now(self) -> float:
        with self._lock:
            return self._now

    # ---- units --------------------------------------------------------------------
    def _unit(self) -> Unit | None:
        """The calling thread's unit: its participant(), else a carried open ticket."""
        unit: Unit | None = getattr(self._local, "unit", None)
        if unit is not None:
            return unit
        carried = _CARRIED.get()
        if carried is None or carried.clock is not self or carried.closed:
            return None
        if carried.thread is None:
            carried.thread = threading.get_ident()
        return carried if carried.thread == threading.get_ident() else None

    def _open(self, label: str) -> Unit:
        unit = Unit(self, label)
        self._units.add(unit)
        self._running += 1
        self._progress += 1
        return unit

    def _close(self, unit: Unit) -> None:
        with self._lock:
            if unit.closed:
                return
            unit.closed = True
            self._units.discard(unit)
            if unit.state == "running":
                self._running -= 1
            self._progress += 1
            for other in list(self._units):  # wait_for callers this closing releases
                if other.awaits is not None and self._satisfied(other):
                    self._resume(other)
            self._settle()

    def expect(self, label: str) -> Ticket:
        with self._lock:
            return self._open(label)

    @contextmanager
    def _carry(self, unit: Unit) -> Iterator[None]:
        token = _CARRIED.set(unit)
        try:
            yield
        finally:
            _CARRIED.reset(token)

    @contextmanager
    def participant(self, ticket: Ticket | None = None) -> Iterator[None]:
        """Take part while inside; re-entrant per thread. With a ticket from expect(), this
        thread adopts the announced work and closes the ticket on leaving."""
        mine = getattr(self._local, "unit", None)
        if mine is not None:  # already taking part: announced work runs inline here
            if isinstance(ticket, Unit):
                ticket.close()
            yield
            return
        carried = self._unit()  # a ticket this thread's context carries is adopted
        if isinstance(ticket, Unit) and not ticket.closed:
            unit = ticket
            if carried is not None and carried is not ticket:
                carried.close()
        elif carried is not None:
            unit = carried
        else:
            with self._lock:
                unit = self._open(f"thread {threading.current_thread().name}")
        unit.thread = threading.get_ident()
        self._local.unit = unit
        try:
            yield
        finally:
            self._local.unit = None
            unit.close()

    # ---- the state machine (all under self._lock) ------------------------------------
    def _pause(self, unit: Unit, state: str) -> None:
        unit.state = state
        self._running -= 1
        self._progress += 1

    def _resume(self, unit: Unit) -> None:
        unit.state = "running"
        unit.awaits = None
        self._running += 1
        self._progress += 1
        unit.wake.notify()

    def _satisfied(self, unit: Unit) -> bool:
        assert unit.awaits is not None
        tickets, first = unit.awaits
        done = [t.closed for t in tickets]
        return any(done) if first else all(done)

    def _settle(self) -> None:
        """With no unit running: jump to the earliest wake-up and resume the units due."""
        if self._running > 0:
            return
        if not self._sleepers:
            if self._units and self._deadlocked():
                message = (f"virtual clock deadlock at {self._now:.3f}: every participant "
                           f"waits and no wake-up is pending ({self._describe()}); work "
                           "announced with expect() never started, or waits for itself")
                for unit in self._units:  # every waiter raises, none is left hanging
                    unit.error = message
                    unit.wake.notify()
            return
        moment = self._sleepers[0][0]
        self._now = max(self._now, moment)
        self.jumps += 1
        while self._sleepers and self._sleepers[0][0] <= self._now:
            self._resume(heapq.heappop(self._sleepers)[2])

    def _deadlocked(self) -> bool:
        return (self._running == 0 and not self._sleepers
                and all(u.state == "waiting" for u in self._units))

    def _wait(self, unit: Unit, until: str) -> None:
        """Block on unit.wake until it runs again; raise rather than hang."""
        seen = self._progress
        while unit.state != "running" or unit.error is not None:
            if unit.error is not None:
                message, unit.error = unit.error, None
                self._abandon(unit)
                raise DroverError(message)
            if not unit.wake.wait(self.stall_seconds) and self._progress == seen:
                self._abandon(unit)
                raise DroverError(
                    f"virtual clock stalled at {self._now:.3f}: waited "
                    f"{self.stall_seconds:g}s of wall time for {until} while "
                    f"{self._describe()} held time still; a participant blocked on "
                    "something other than the clock must wait inside clock.blocked()")
            seen = self._progress

    def _abandon(self, unit: Unit) -> None:
        """The unit leaves its wait by raising: it runs again, and is no sleeper."""
        if unit.state == "running":
            return
        if unit.state == "sleeping":
            self._sleepers = [s for s in self._sleepers if s[2] is not unit]
            heapq.heapify(self._sleepers)
        unit.state = "running"
        unit.awaits = None
        self._running += 1

    def _describe(self) -> str:
        units = sorted(self._units, key=lambda u: u.label)
        return ", ".join(repr(u) for u in units[:8]) + (" ..." if len(units) > 8 else "") \
            or "no participant"

    # ---- waiting ------------------------------------------------------------------
    def _transient(self) -> Unit:
        """A unit for a thread that takes no part, for the length of one wait: it holds time
        only from its wake-up until the wait returns, so its caller sees its own moment."""
        unit = Unit(self, f"thread {threading.current_thread().name}")
        self._running += 1
        return unit

    def sleep_until(self, moment: float) -> None:
        unit = self._unit()
        with self._lock:
            if moment <= self._now:
                return
            transient = unit is None
            if unit is None:
                unit = self._transient()
            self._pause(unit, "sleeping")
            unit.moment = moment
            heapq.heappush(self._sleepers, (moment, next(self._seq), unit))
            try:
                self._settle()
                self._wait(unit, f"virtual time {moment:.3f}")
            except BaseException:
                self._abandon(unit)  # interrupted (KeyboardInterrupt): it runs again
                raise
            finally:
                if transient:
                    self._running -= 1
                    self._settle()

    @contextmanager
    def blocked(self) -> Iterator[None]:
        """Wait on something outside the clock: time may move meanwhile."""
        unit = self._unit()
        if unit is None or unit.state != "running":
            yield
            return
        with self._lock:
            self._pause(unit, "blocked")
            self._settle()
        try:
            yield
        finally:
            with self._lock:
                self._resume(unit)

    def wait_for(self, tickets: Iterable[Ticket], first: bool = False) -> list[Ticket]:
        own = [t for t in tickets if isinstance(t, Unit)]
        if not own:
            return []
        unit = self._unit()
        with self._lock:
            transient = unit is None
            if unit is None:
                unit = self._transient()
                self._units.add(unit)
            unit.awaits = (own, first)
            try:
                if not self._satisfied(unit):
                    self._pause(unit, "waiting")
                    self._settle()
                    self._wait(unit, f"{'one of ' if first else ''}{len(own)} ticket(s)")
            except BaseException:
                self._abandon(unit)
                raise
            finally:
                unit.awaits = None
                if transient:
                    self._units.discard(unit)
                    self._running -= 1
                    self._settle()
            return [t for t in own if t.closed]


__all__ = ["AutojumpClock"]
