"""Health checks per node and per cluster, how long each node has been failing, and
the remediation decision (replace, or alert when too many nodes fail at once).

The decision is Cluster API's MachineHealthCheck: a node failing longer than
`unhealthy_after` is replaced, unless more than `max_unhealthy_percent` of the
nodes fail at once, when replacing would make things worse: then alert only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from drover.deploy import Infra
from drover.statefile import sqlite_connect, sqlite_errors


@dataclass(frozen=True)
class NodeHealth:
    node: str
    role: str
    talos_api: bool          # the Talos API answers (authenticated)
    services: bool           # machined reports the node running its config
    etcd: bool | None        # a healthy etcd member (control planes only)
    ready: bool              # Kubernetes node Ready

    @property
    def healthy(self) -> bool:
        return self.talos_api and self.services and self.ready and self.etcd is not False

    def problems(self) -> list[str]:
        checks = {"Talos API unreachable": self.talos_api, "services down": self.services,
                  "etcd member unhealthy": self.etcd is not False, "NotReady": self.ready}
        return [name for name, ok in checks.items() if not ok]


@dataclass(frozen=True)
class ClusterHealthReport:
    cluster: str
    nodes: list[NodeHealth]
    api_up: bool
    etcd_healthy: int
    etcd_members: int
    control_planes: int

    @property
    def unhealthy(self) -> list[NodeHealth]:
        return [n for n in self.nodes if not n.healthy]

    def rows(self) -> list[dict[str, str]]:
        mark = {True: "ok", False: "FAIL", None: "n/a"}  # a lone "-" renders as a bullet
        return [{"node": n.node, "role": n.role, "talos api": mark[n.talos_api],
                 "services": mark[n.services], "etcd": mark[n.etcd], "ready": mark[n.ready],
                 "problems": ", ".join(n.problems()) or "none"} for n in self.nodes]


def check(infra: Infra) -> ClusterHealthReport:
    health = infra.talos.cluster_health()
    members = {m.node: m.healthy for m in health.members}
    nodes = []
    for node in infra.provider.list_nodes():
        status = infra.talos.machine_status(node)
        up = status.stage == "running"
        nodes.append(NodeHealth(node.name, node.role, up, up and status.configured,
                                members.get(node.name, False) if node.role == "controlplane"
                                else None, status.ready))
    return ClusterHealthReport(infra.spec.name, nodes, health.api_up and not health.quorum_lost,
                               health.healthy_members(), len(health.members),
                               infra.spec.spec.control_plane.count)


class FailureLog:
    """Since when each node has been failing, kept between health-check runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as con:
            con.execute("CREATE TABLE IF NOT EXISTS failing (cluster TEXT, node TEXT, "
                        "since REAL, PRIMARY KEY (cluster, node))")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        con = sqlite_connect(self.path, timeout=30)  # 0600 in a 0700 folder
        try:
            with sqlite_errors(self.path), con:
                yield con
        finally:
            con.close()

    def update(self, cluster: str, failing: list[str], now: float) -> dict[str, float]:
        """Record this check's failing nodes; return each one's failing-since time."""
        with self._db() as con:
            con.execute(f"DELETE FROM failing WHERE cluster=? AND node NOT IN "
                        f"({','.join('?' * len(failing))})", (cluster, *failing))
            for node in failing:
                con.execute("INSERT OR IGNORE INTO failing VALUES (?, ?, ?)",
                            (cluster, node, now))
            rows = con.execute("SELECT node, since FROM failing WHERE cluster=?", (cluster,))
            return dict(rows.fetchall())


@dataclass(frozen=True)
class Remediation:
    replace: list[str] = field(default_factory=list)
    waiting: dict[str, float] = field(default_factory=dict)   # failing, not long enough yet
    alert: str | None = None


def decide(report: ClusterHealthReport, since: dict[str, float], now: float,
           unhealthy_after: float, max_unhealthy_percent: int) -> Remediation:
    """Which nodes to replace now; or only an alert when too many fail at once."""
    failing = [n.node for n in report.unhealthy]
    total = len(report.nodes)
    if total and 100 * len(failing) / total > max_unhealthy_percent:
        return Remediation(alert=(
            f"{report.cluster}: {len(failing)} of {total} nodes are unhealthy "
            f"({', '.join(failing)}), more than the {max_unhealthy_percent}% limit: not "
            "replacing any (a mass failure is a network, power or storage problem that "
            "replacing nodes would make worse); a human needs to look"))
    due = [n for n in failing if now - since.get(n, now) >= unhealthy_after]
    waiting = {n: now - since.get(n, now) for n in failing if n not in due}
    return Remediation(replace=due, waiting=waiting)
