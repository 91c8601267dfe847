"""The lab's SQLite file: schema, connections, and the persisted virtual clock.

WAL mode and short IMMEDIATE transactions let parallel tasks (threads or
worker processes) share one lab; every operation is one transaction. The file is
0600 in a 0700 folder, created only where none exists: an empty or foreign file
is refused with its path, never silently rebuilt.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from secrets import token_hex

from drover.clock import Clock
from drover.errors import StateError
from drover.statefile import check_private, damaged, private_dir, sqlite_connect, sqlite_errors

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, cluster TEXT NOT NULL, role TEXT NOT NULL, pool TEXT NOT NULL,
    state TEXT NOT NULL, since REAL NOT NULL, due REAL,
    address TEXT NOT NULL, image TEXT, config_hash TEXT, talos_version TEXT,
    cpus INTEGER, memory_mib INTEGER, disk_gib INTEGER,
    created_at REAL NOT NULL, running_at REAL, join_due REAL, ready_due REAL, ready_at REAL,
    kubernetes_version TEXT, cordoned INTEGER NOT NULL DEFAULT 0, target_version TEXT,
    etcd_data TEXT, config TEXT
);
CREATE INDEX IF NOT EXISTS nodes_cluster ON nodes(cluster);
CREATE TABLE IF NOT EXISTS clusters (
    name TEXT PRIMARY KEY, bootstrapped_at REAL, bootstrap_node TEXT,
    bootstraps INTEGER NOT NULL DEFAULT 0, api_due REAL, api_up_at REAL, quorum_lost_at REAL
);
CREATE TABLE IF NOT EXISTS etcd_members (
    cluster TEXT NOT NULL, node TEXT NOT NULL, member_id TEXT NOT NULL, joined_at REAL NOT NULL,
    PRIMARY KEY (cluster, node)
);
CREATE TABLE IF NOT EXISTS fault_uses (
    cluster TEXT NOT NULL, fault TEXT NOT NULL, used INTEGER NOT NULL,
    PRIMARY KEY (cluster, fault)
);
CREATE TABLE IF NOT EXISTS images (
    cluster TEXT NOT NULL, ref TEXT NOT NULL, prepared_at REAL NOT NULL,
    PRIMARY KEY (cluster, ref)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cluster TEXT NOT NULL, at REAL NOT NULL,
    node TEXT, what TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS etcd_snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cluster TEXT NOT NULL, taken_at REAL NOT NULL,
    node TEXT NOT NULL, revision INTEGER NOT NULL, hash TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS etcd_recoveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cluster TEXT NOT NULL, at REAL NOT NULL,
    node TEXT NOT NULL, snapshot INTEGER NOT NULL, revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 1), now REAL NOT NULL);
"""


#: node columns added after the first release, for lab files made before them
ADDED_COLUMNS = [("kubernetes_version", "TEXT"), ("cordoned", "INTEGER NOT NULL DEFAULT 0"),
                 ("target_version", "TEXT"), ("etcd_data", "TEXT"), ("config", "TEXT")]


class CommitThenRaise(Exception):
    """Raised inside a transaction: keep its writes (an injected fault spent), then raise."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


#: one lock per lab file in this process: its threads queue here, not in SQLite's busy
#: handler (which sleeps in milliseconds); other processes still queue in SQLite
_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _process_lock(path: Path) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path.resolve()), threading.RLock())


class LabStore:
    def __init__(self, path: Path) -> None:
        """Open the lab file at `path`, creating it only where no file exists: an existing
        file that is empty, foreign or damaged is refused, never re-initialised."""
        self.path = Path(path)
        private_dir(self.path.parent)
        if not self.path.exists():
            self._create()
        check_private(self.path)
        self._uri = f"{self.path.resolve().as_uri()}?mode=rw"  # rw: never create it again
        self._lock = _process_lock(self.path)
        self._local = threading.local()
        with self.connect() as con:
            tables = {row[0] for row in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "nodes" not in tables:
                what = "is empty" if not tables else "holds no drover lab"
                raise StateError(f"{self.path}: {what}: restore it, or delete it to start an "
                                 "empty lab; every lab cluster in it is then forgotten")
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)  # the tables a later drover added
            self._migrate(con)
        self._drop()  # opening leaves no connection (nor -wal file) behind

    def _create(self) -> None:
        """Build a new lab file aside and link it into place: a crash half-way never leaves an
        empty lab.db (which the next open would refuse), and of two first opens one wins."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{token_hex(4)}.tmp")
        try:
            con = sqlite_connect(tmp, timeout=60, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
                con.executescript(SCHEMA)
            finally:
                con.close()  # the last connection checkpoints and removes the -wal file
            os.link(tmp, self.path)
        except FileExistsError:
            pass  # another process created it first: open that one
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)

    @staticmethod
    def _migrate(con: sqlite3.Connection) -> None:
        """Add the columns later versions of drover use to a lab file made by an earlier one."""
        have = {row[1] for row in con.execute("PRAGMA table_info(nodes)")}
        for column, decl in ADDED_COLUMNS:
            if column not in have:
                con.execute(f"ALTER TABLE nodes ADD COLUMN {column} {decl}")

    def _open(self) -> sqlite3.Connection:
        """This thread's connection to the lab file, opened on first use and kept (opening
        one per operation cost half of each operation's time)."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None and self._inode() == getattr(self._local, "inode", None):
            return con  # still the same file (not removed, nor replaced by another)
        self._drop()
        try:
            con = sqlite3.connect(self._uri, uri=True, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            if not self.path.exists():
                raise StateError(f"{self.path}: the lab file was removed while drover used it; "
                                 "restore it, or start again with an empty lab") from None
            raise damaged(self.path, exc) from None
        con.row_factory = sqlite3.Row
        try:  # WAL + NORMAL: a crash keeps the file intact (the lab may lose its last moments)
            con.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            con.close()
            raise damaged(self.path, exc) from None
        self._local.con, self._local.inode = con, self._inode()
        return con

    def _inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except FileNotFoundError:
            return None

    def _drop(self) -> None:
        """Close this thread's connection (after an error, or the file was removed)."""
        con = getattr(self._local, "con", None)
        self._local.con = None
        if con is not None:
            con.close()

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """One connection; a damaged file surfaces as a StateError naming it."""
        con = self._open()
        try:
            with sqlite_errors(self.path):
                yield con
        except BaseException:
            self._drop()
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so concurrent writers queue instead of failing."""
        with self._lock:
            yield from self._transaction()

    def _transaction(self) -> Iterator[sqlite3.Connection]:
        con = self._open()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except CommitThenRaise as exc:
                con.execute("COMMIT")
                raise exc.error from None
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        except BaseException:
            self._drop()
            raise


class VirtualClock(Clock):
    """A clock stored in the lab file: time moves only when someone waits for it.

    Every process sharing the lab sees the same time, so flows under Prefect
    (threads or worker processes) run a whole deploy with no real sleep.
    """

    real = False

    def __init__(self, store: LabStore, start: float = 1_700_000_000.0) -> None:
        self.store = store
        with store.transaction() as con:
            con.execute("INSERT OR IGNORE INTO clock (id, now) VALUES (1, ?)", (start,))

    def now(self) -> float:
        with self.store.connect() as con:
            return float(con.execute("SELECT now FROM clock WHERE id = 1").fetchone()[0])

    def sleep_until(self, moment: float) -> None:
        with self.store.transaction() as con:
            con.execute("UPDATE clock SET now = MAX(now, ?) WHERE id = 1", (moment,))
