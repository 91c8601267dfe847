"""Which run created which node: every node is recorded with the run id that creates it,
before the create call, so that clean-up after a failed run deletes only the nodes its own
run created, never those of another run (or of an earlier, successful one). Kept beside the
leases in $DROVER_HOME/operations.db; a node recreated by a later run belongs to that run.
"""

from __future__ import annotations

from collections.abc import Iterable

from drover.lease import connect, database
from drover.statefile import sqlite_errors

SCHEMA = """CREATE TABLE IF NOT EXISTS created_nodes (
    cluster TEXT NOT NULL, node TEXT NOT NULL, run_id TEXT NOT NULL,
    PRIMARY KEY (cluster, node))"""


def execute(sql: str, rows: Iterable[tuple[str, ...]]) -> None:
    path = database()
    conn = connect(path)
    try:
        with sqlite_errors(path):
            conn.execute(SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
    finally:
        conn.close()


def record_created(cluster: str, node: str, run_id: str) -> None:
    """Note that run `run_id` creates `node` (call it just before the create)."""
    execute("INSERT OR REPLACE INTO created_nodes (cluster, node, run_id) VALUES (?, ?, ?)",
            [(cluster, node, run_id)])


def created_by(cluster: str, run_id: str) -> list[str]:
    """The nodes of `cluster` that run `run_id` created (or set out to create), sorted."""
    path = database()
    conn = connect(path)
    try:
        with sqlite_errors(path):
            conn.execute(SCHEMA)
            rows = conn.execute("SELECT node FROM created_nodes WHERE cluster = ? AND run_id = ?"
                                " ORDER BY node", (cluster, run_id)).fetchall()
    finally:
        conn.close()
    return [node for (node,) in rows]


def forget(cluster: str, nodes: Iterable[str] | None = None) -> None:
    """Drop the records of `nodes` once deleted, or of the whole cluster (None)."""
    if nodes is None:
        execute("DELETE FROM created_nodes WHERE cluster = ?", [(cluster,)])
    else:
        execute("DELETE FROM created_nodes WHERE cluster = ? AND node = ?",
                [(cluster, node) for node in nodes])
