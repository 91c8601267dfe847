"""The compliance history of every cluster: one row per report in $DROVER_HOME/compliance.db
(0600), so `drover compliance history CLUSTER` shows the trend."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from drover.compliance.result import FAIL, PASS, Report
from drover.home import drover_home
from drover.statefile import sqlite_connect, sqlite_errors

SCHEMA = """CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cluster TEXT NOT NULL, created TEXT NOT NULL,
    source TEXT NOT NULL, benchmark TEXT NOT NULL, talos TEXT NOT NULL, kubernetes TEXT NOT NULL,
    passed INTEGER NOT NULL, failed INTEGER NOT NULL, totals TEXT NOT NULL, report TEXT NOT NULL)"""


@dataclass(frozen=True)
class Entry:
    cluster: str
    created: str
    source: str
    benchmark: str
    talos: str
    kubernetes: str
    passed: int
    failed: int
    totals: dict[str, int]


class ComplianceHistory:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or drover_home() / "compliance.db"

    def _open(self):  # type: ignore[no-untyped-def]
        db = sqlite_connect(self.path)
        with sqlite_errors(self.path):
            db.execute(SCHEMA)
        return db

    def record(self, report: Report) -> None:
        totals = report.totals()
        db = self._open()
        try:
            with sqlite_errors(self.path), db:
                db.execute("INSERT INTO reports (cluster, created, source, benchmark, talos, "
                           "kubernetes, passed, failed, totals, report) VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (report.cluster, report.created, report.source, report.benchmark,
                            report.talos_version, report.kubernetes_version, totals[PASS],
                            totals[FAIL], json.dumps(totals), json.dumps(report.to_dict())))
        finally:
            db.close()

    def entries(self, cluster: str, limit: int = 50) -> list[Entry]:
        """Oldest first, the last `limit` reports of the cluster."""
        db = self._open()
        try:
            with sqlite_errors(self.path):
                rows = db.execute("SELECT cluster, created, source, benchmark, talos, "
                                  "kubernetes, passed, failed, totals FROM reports WHERE "
                                  "cluster = ? ORDER BY id DESC LIMIT ?",
                                  (cluster, limit)).fetchall()
        finally:
            db.close()
        return [Entry(*row[:8], totals=json.loads(row[8])) for row in reversed(rows)]

    def latest(self, cluster: str) -> Report | None:
        db = self._open()
        try:
            with sqlite_errors(self.path):
                row = db.execute("SELECT report FROM reports WHERE cluster = ? ORDER BY id "
                                 "DESC LIMIT 1", (cluster,)).fetchone()
        finally:
            db.close()
        return Report.from_dict(json.loads(row[0])) if row else None
