"""The lab's SQLite file: schema, connections, and the persisted virtual clock.

WAL mode and short IMMEDIATE transactions let parallel tasks (threads or
worker processes) share one lab; every operation is one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from drover.lab.clock import Clock

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, cluster TEXT NOT NULL, role TEXT NOT NULL, pool TEXT NOT NULL,
    state TEXT NOT NULL, since REAL NOT NULL, due REAL,
    address TEXT NOT NULL, image TEXT, config_hash TEXT, talos_version TEXT,
    cpus INTEGER, memory_mib INTEGER, disk_gib INTEGER,
    created_at REAL NOT NULL, running_at REAL, join_due REAL, ready_due REAL, ready_at REAL,
    kubernetes_version TEXT, cordoned INTEGER NOT NULL DEFAULT 0, target_version TEXT
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
CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 1), now REAL NOT NULL);
"""


#: node columns added after the first release, for lab files made before them
ADDED_COLUMNS = [("kubernetes_version", "TEXT"), ("cordoned", "INTEGER NOT NULL DEFAULT 0"),
                 ("target_version", "TEXT")]


class CommitThenRaise(Exception):
    """Raised inside a transaction: keep its writes (an injected fault spent), then raise."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class LabStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            self._migrate(con)

    @staticmethod
    def _migrate(con: sqlite3.Connection) -> None:
        """Add the columns later versions of drover use to a lab file made by an earlier one."""
        have = {row[1] for row in con.execute("PRAGMA table_info(nodes)")}
        for column, decl in ADDED_COLUMNS:
            if column not in have:
                con.execute(f"ALTER TABLE nodes ADD COLUMN {column} {decl}")

    def _open(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.row_factory = sqlite3.Row
        return con

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        con = self._open()
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so concurrent writers queue instead of failing."""
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
        finally:
            con.close()


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
