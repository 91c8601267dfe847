"""One mutating operation per cluster: a lease in $DROVER_HOME/operations.db that names its
holder (operation, run id, pid, host, since), is kept alive by a heartbeat thread and expires
on the wall clock, so a killed holder never wedges the cluster. Every process on the host
(CLI runs on their own ephemeral Prefect server, workers, served deployments) meets here,
which a Prefect concurrency limit on an ephemeral server cannot give. A holder on this host
whose process is gone is taken over at once; any other only after its lease expired. A
holder that lost its lease (taken over after it stopped beating) learns it at its next beat.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from drover.errors import ClusterBusy
from drover.home import drover_home
from drover.lab.clock import Clock, SystemClock
from drover.statefile import sqlite_connect, sqlite_errors

IfBusy = Literal["fail", "wait"]

SCHEMA = """CREATE TABLE IF NOT EXISTS leases (
    cluster TEXT PRIMARY KEY, token TEXT NOT NULL, operation TEXT NOT NULL,
    owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    since REAL NOT NULL, heartbeat REAL NOT NULL, expires REAL NOT NULL)"""
COLUMNS = "cluster, operation, owner, pid, host, since, heartbeat, expires"


def database() -> Path:
    return drover_home() / "operations.db"


def connect(path: Path | None = None) -> sqlite3.Connection:
    """The operations database (leases, and the ledger's creations), schema in place.

    Autocommit mode, so every write is one explicit short BEGIN IMMEDIATE … COMMIT.
    """
    path = path or database()
    conn = sqlite_connect(path, timeout=30, isolation_level=None)
    with sqlite_errors(path):
        conn.execute(SCHEMA)
    return conn


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds a cluster: the operation, its run, where it runs, and how fresh it is."""

    cluster: str
    operation: str
    owner: str
    pid: int
    host: str
    since: float
    heartbeat: float
    expires: float


def holder(cluster: str, clock: Clock | None = None) -> LeaseInfo | None:
    """Who holds `cluster` now, or None when it is free (or its holder expired or died)."""
    now = (clock or SystemClock()).now()
    conn = connect()
    try:
        row = conn.execute(f"SELECT {COLUMNS} FROM leases WHERE cluster = ?",
                           (cluster,)).fetchone()
    finally:
        conn.close()
    info = LeaseInfo(*row) if row else None
    return None if info is None or takeable(info, now, socket.gethostname()) else info


def describe(info: LeaseInfo, clock: Clock | None = None) -> str:
    """One line naming the holder: operation, run, pid@host, since when, last heartbeat."""
    now = (clock or SystemClock()).now()
    return (f"{info.cluster}: busy with {info.operation} (run {info.owner}, pid {info.pid} "
            f"on {info.host}) since {stamp(info.since)}, last heartbeat "
            f"{max(0.0, now - info.heartbeat):.0f}s ago; its lease expires at "
            f"{stamp(info.expires)} unless it beats again")


def stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def process_alive(pid: int) -> bool:
    """Whether `pid` runs on this host; a zombie (killed, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def takeable(info: LeaseInfo, now: float, host: str) -> bool:
    return info.expires <= now or (info.host == host and not process_alive(info.pid))


class Lease:
    """A held lease: `release()` (or leaving the `with` block) frees the cluster.

    `lost` turns true when a heartbeat finds the lease taken by another run; `check()`
    raises ClusterBusy then. Leaving the block with a lost lease raises it too, unless an
    exception is already on its way.
    """

    def __init__(self, info: LeaseInfo, token: str, ttl: float, clock: Clock,
                 path: Path) -> None:
        self.info, self.token, self.ttl, self.clock, self.path = info, token, ttl, clock, path
        self.lost = False
        self.taken_by: LeaseInfo | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat_forever, daemon=True,
                                        name=f"lease-{self.info.cluster}")
        self._thread.start()

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.beat():
                    return
            except sqlite3.OperationalError:
                continue  # database busy for 30 s: try again; the lease still has 2/3 left

    def beat(self) -> bool:
        """Push the expiry out by ttl; False (and `lost`) if another run holds the lease."""
        if self.lost:
            return False
        now = self.clock.now()
        conn = connect(self.path)
        try:
            with sqlite_errors(self.path):
                conn.execute("BEGIN IMMEDIATE")
                updated = conn.execute(
                    "UPDATE leases SET heartbeat = ?, expires = ? WHERE cluster = ? AND token = ?",
                    (now, now + self.ttl, self.info.cluster, self.token)).rowcount
                row = None if updated else conn.execute(
                    f"SELECT {COLUMNS} FROM leases WHERE cluster = ?",
                    (self.info.cluster,)).fetchone()
                conn.execute("COMMIT")
        finally:
            conn.close()
        if not updated:
            self.lost, self.taken_by = True, LeaseInfo(*row) if row else None
            self._stop.set()
        return bool(updated)

    def check(self) -> None:
        """Raise ClusterBusy if this run no longer holds the cluster."""
        if self.lost:
            now_held = (f"; {describe(self.taken_by, self.clock)}" if self.taken_by
                        else "; nobody holds it now")
            raise ClusterBusy(
                f"{self.info.cluster}: the lease of {self.info.operation} (run "
                f"{self.info.owner}) was lost: it missed its heartbeats for {self.ttl:.0f}s "
                f"and was taken over{now_held}; check the cluster before re-running")

    def release(self) -> None:
        """Stop the heartbeat and free the cluster (only if this lease still holds it)."""
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join()
        conn = connect(self.path)
        try:
            with sqlite_errors(self.path):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM leases WHERE cluster = ? AND token = ?",
                             (self.info.cluster, self.token))
                conn.execute("COMMIT")
        finally:
            conn.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        self.release()
        if kind is None:
            self.check()


def acquire(cluster: str, operation: str, owner: str, *, if_busy: IfBusy = "fail",
            wait_seconds: float = 600, ttl: float = 60, clock: Clock | None = None,
            poll_seconds: float = 1.0, heartbeat: bool = True,
            on_wait: Callable[[LeaseInfo], None] | None = None) -> Lease:
    """Take `cluster`'s lease for `operation` by run `owner`, or raise ClusterBusy naming
    the holder: at once (if_busy="fail") or after waiting `wait_seconds` ("wait"; `on_wait`
    is told the holder once, when the wait begins). The lease lives `ttl` seconds past its
    last heartbeat; the heartbeat thread beats every ttl/3 until release."""
    if if_busy not in ("fail", "wait"):
        raise ValueError(f"if_busy: {if_busy!r} is neither 'fail' nor 'wait'")
    clock = clock or SystemClock()
    path, host, pid, token = database(), socket.gethostname(), os.getpid(), uuid.uuid4().hex
    deadline = clock.now() + (wait_seconds if if_busy == "wait" else 0)
    waiting = False
    while True:
        now = clock.now()
        wanted = LeaseInfo(cluster, operation, owner, pid, host, now, now, now + ttl)
        current = take(path, wanted, token)
        if current is None:
            lease = Lease(wanted, token, ttl, clock, path)
            if heartbeat:
                lease.start_heartbeat()
            return lease
        if now >= deadline:
            waited = f" (waited {wait_seconds:.0f}s)" if if_busy == "wait" else ""
            error = ClusterBusy(f"{describe(current, clock)}{waited}; run {operation} again "
                                "once it has finished, or let it wait for the cluster")
            error.holder = current  # type: ignore[attr-defined]
            raise error
        if not waiting and on_wait:
            on_wait(current)
        waiting = True
        clock.sleep(max(0.001, min(poll_seconds, current.expires - now, deadline - now)))


def take(path: Path, wanted: LeaseInfo, token: str) -> LeaseInfo | None:
    """In one IMMEDIATE transaction, take the lease if it is free, expired or orphaned on
    this host (None); otherwise return its holder."""
    conn = connect(path)
    try:
        with sqlite_errors(path):
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(f"SELECT {COLUMNS} FROM leases WHERE cluster = ?",
                               (wanted.cluster,)).fetchone()
            current = LeaseInfo(*row) if row else None
            if current is None or takeable(current, wanted.since, wanted.host):
                conn.execute(
                    "INSERT OR REPLACE INTO leases (cluster, token, operation, owner, pid, host,"
                    " since, heartbeat, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (wanted.cluster, token, wanted.operation, wanted.owner, wanted.pid,
                     wanted.host, wanted.since, wanted.heartbeat, wanted.expires))
                current = None
            conn.execute("COMMIT")
            return current
    finally:
        conn.close()
