"""The lab's engine: scheduled changes applied in time order, faults, and etcd quorum.

No background process runs. Each node row holds its state, when it entered
it, and when its next change is due; every operation first advances the
cluster to "now" by the clock (`_advance`), applying due changes earliest first.
A control plane joins etcd once etcd has a member and quorum. Its etcd data
(nodes.etcd_data) is 'empty' when new or wiped (it then joins as a new member, replacing
an old member of its name), NULL once it joined (it holds data while it is a member), or
'stale': the data of an etcd that was since recovered from a snapshot, so it never joins
until it is wiped.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import sqlite3
from pathlib import Path

from drover.clock import Clock, SystemClock, installed_clock
from drover.errors import NodeNotFound, TransientError
from drover.lab.model import LabNode
from drover.lab.profiles import Profile, load_profile
from drover.lab.store import CommitThenRaise, LabStore, VirtualClock
from drover.spec import ClusterSpec, LabFault, LabProvider

#: state -> (next state, profile step that sets how long the state lasts)
LIFECYCLE = {
    "created": ("booting", "create"),
    "booting": ("maintenance", "boot"),
    "installing": ("rebooting", "install"),
    "rebooting": ("running", "reboot"),
    "upgrading": ("rebooting", "install"),   # the new image written while the node runs on
}
ALIVE = ("running",)


class LabEngine:
    """Time in the lab: scheduled changes applied in order, faults, etcd quorum."""

    def __init__(self, spec: ClusterSpec, path: Path, clock: Clock | None = None) -> None:
        settings = spec.spec.provider
        if not isinstance(settings, LabProvider):
            # The lab emulates only the Talos layer of real machines: no extra delays, no
            # faults; the machines' own boot takes the time.
            settings = LabProvider(kind="lab", profile="instant")
        self.cluster = spec.name
        self.store = LabStore(path)
        if clock is None:  # a clock installed by use_clock (drover predict) wins
            clock = installed_clock() or (VirtualClock(self.store) if settings.clock == "virtual"
                                          else SystemClock())
        self.clock = clock
        self.profile: Profile = load_profile(settings.profile, settings.compression)
        self.faults: list[LabFault] = list(settings.faults)
        self.network = ipaddress.ip_network(settings.network)
        self.seed = settings.seed

    # ---- reading ------------------------------------------------------------
    def _node(self, con: sqlite3.Connection, row: sqlite3.Row,
              available: bool | None = None) -> LabNode:
        """A node as read now; Ready needs the API available (kubelets report through it)."""
        if available is None:
            available = self._available(con)
        member = con.execute("SELECT 1 FROM etcd_members WHERE cluster=? AND node=?",
                             (self.cluster, row["name"])).fetchone() is not None
        return LabNode(row["name"], row["cluster"], row["role"], row["pool"], row["state"],
                       row["since"], row["address"], row["talos_version"], row["config_hash"],
                       row["ready_at"] is not None and row["state"] == "running" and available,
                       member,
                       bool(row["cordoned"]), row["kubernetes_version"], row["image"])

    def _get(self, con: sqlite3.Connection, name: str) -> LabNode:
        row = con.execute("SELECT * FROM nodes WHERE name=? AND cluster=?",
                          (name, self.cluster)).fetchone()
        if row is None:
            raise NodeNotFound(f"{name}: no such node in lab cluster {self.cluster!r}")
        return self._node(con, row)

    def _reachable(self, con: sqlite3.Connection, name: str) -> LabNode:
        node = self._get(con, name)
        if self._take_fault(con, "talos-api-errors", name):
            raise CommitThenRaise(TransientError(
                f"{name}: Talos API: rpc error: code = Unavailable (injected fault)"))
        if node.state not in ("maintenance", "running"):
            raise TransientError(f"{name}: Talos API not reachable while the node is "
                                 f"{node.state}")
        return node

    # ---- time -------------------------------------------------------------
    def _draw(self, step: str, node: str, n: int = 0) -> float:
        rng = random.Random(f"{self.seed}:{node}:{step}:{n}") if self.seed is not None \
            else random.Random()
        return self.profile.duration(step, rng)

    def _fault(self, kind: str, node: str) -> LabFault | None:
        return next((f for f in self.faults if f.type == kind and f.node == node), None)

    def _take_fault(self, con: sqlite3.Connection, kind: str, node: str) -> bool:
        """Whether a counted fault fires now (and spend one use of it)."""
        fault = self._fault(kind, node)
        if fault is None:
            return False
        key = f"{kind}:{node}"
        row = con.execute("SELECT used FROM fault_uses WHERE cluster=? AND fault=?",
                          (self.cluster, key)).fetchone()
        used = row["used"] if row else 0
        if used >= fault.times:
            return False
        con.execute("INSERT OR REPLACE INTO fault_uses VALUES (?, ?, ?)",
                    (self.cluster, key, used + 1))
        return True

    def _event(self, con: sqlite3.Connection, at: float, node: str | None, what: str) -> None:
        con.execute("INSERT INTO events (cluster, at, node, what) VALUES (?, ?, ?, ?)",
                    (self.cluster, at, node, what))

    def _advance(self, con: sqlite3.Connection) -> float:
        """Apply every change due by now, earliest first; return now."""
        now = self.clock.now()
        while True:
            row = con.execute(
                """SELECT 'state' AS kind, name, due AS at FROM nodes
                       WHERE cluster=:c AND due IS NOT NULL AND due <= :now
                   UNION ALL SELECT 'join', name, join_due FROM nodes
                       WHERE cluster=:c AND join_due IS NOT NULL AND join_due <= :now
                   UNION ALL SELECT 'ready', name, ready_due FROM nodes
                       WHERE cluster=:c AND ready_due IS NOT NULL AND ready_due <= :now
                   UNION ALL SELECT 'api', name, api_due FROM clusters
                       WHERE name=:c AND api_due IS NOT NULL AND api_due <= :now
                   ORDER BY at, name LIMIT 1""", {"c": self.cluster, "now": now}).fetchone()
            if row is None:
                return now
            getattr(self, f"_on_{row['kind']}")(con, row["name"], row["at"])

    def _on_state(self, con: sqlite3.Connection, name: str, at: float) -> None:
        state = con.execute("SELECT state FROM nodes WHERE name=?", (name,)).fetchone()["state"]
        if state == "running":  # the only scheduled change of a running node is its death
            con.execute("UPDATE nodes SET state='dead', since=?, due=NULL, join_due=NULL, "
                        "ready_due=NULL, ready_at=NULL WHERE name=?", (at, name))
            self._event(con, at, name, "dead")
            self._check_quorum(con, at)
            return
        new = LIFECYCLE[state][0]
        due = None
        if new in LIFECYCLE and not (new == "booting" and self._fault("never-boots", name)):
            due = at + self._draw(LIFECYCLE[new][1], name)
            slow = self._fault("slow-boot", name) if new == "booting" else None
            if slow is not None:  # a slow hypervisor or image pull: the boot takes longer
                due += slow.after_seconds
        con.execute("UPDATE nodes SET state=?, since=?, due=? WHERE name=?", (new, at, due, name))
        self._event(con, at, name, new)
        if new == "running":
            self._finish_upgrade(con, name, at)
            self._on_running(con, name, at)

    def _finish_upgrade(self, con: sqlite3.Connection, name: str, at: float) -> None:
        """A node back from an upgrade runs the new version, or the old one if it failed."""
        row = con.execute("SELECT target_version FROM nodes WHERE name=?", (name,)).fetchone()
        if row["target_version"] is None:
            return
        if self._take_fault(con, "upgrade-fails", name):
            # the new image did not boot: Talos booted the previous (A/B) image again
            self._event(con, at, name, f"rolled-back from {row['target_version']}")
        else:
            con.execute("UPDATE nodes SET talos_version=? WHERE name=?",
                        (row["target_version"], name))
            self._event(con, at, name, f"upgraded to {row['target_version']}")
        con.execute("UPDATE nodes SET target_version=NULL WHERE name=?", (name,))

    def _on_running(self, con: sqlite3.Connection, name: str, at: float) -> None:
        dies = self._fault("dies", name)
        cl = self._cluster_row(con)
        con.execute("UPDATE nodes SET running_at=?, due=? WHERE name=?",
                    (at, at + dies.after_seconds if dies else None, name))
        row = con.execute("SELECT role, etcd_data FROM nodes WHERE name=?", (name,)).fetchone()
        member = con.execute("SELECT 1 FROM etcd_members WHERE node=?", (name,)).fetchone()
        empty = member is None or row["etcd_data"] == "empty"  # its etcd is Preparing
        if row["role"] == "controlplane" and self._member_count(con) > 0 and empty \
                and row["etcd_data"] != "stale":
            con.execute("UPDATE nodes SET join_due=? WHERE name=?",
                        (at + self._draw("etcd_join", name), name))
        if cl and cl["api_up_at"] is not None:
            con.execute("UPDATE nodes SET ready_due=? WHERE name=?",
                        (at + self._draw("node_ready", name), name))

    def _on_join(self, con: sqlite3.Connection, name: str, at: float) -> None:
        con.execute("UPDATE nodes SET join_due=NULL WHERE name=?", (name,))
        cl = self._cluster_row(con)
        if cl is not None and cl["quorum_lost_at"] is not None:
            # adding a member needs quorum: the node's etcd waits (Preparing) for a recovery
            self._event(con, at, name, "etcd-join-waiting")
            return
        first = self._member_count(con) == 0
        member_id = hashlib.sha256(f"{self.cluster}/{name}/{at}".encode()).hexdigest()[:16]
        # a new or wiped node takes its name's member over under a new ID (as Talos does)
        con.execute("INSERT OR REPLACE INTO etcd_members VALUES (?, ?, ?, ?)",
                    (self.cluster, name, member_id, at))
        con.execute("UPDATE nodes SET etcd_data=NULL WHERE name=?", (name,))
        self._event(con, at, name, "etcd-member")
        if first:  # the API server starts once etcd has a member; others may now join
            con.execute("UPDATE clusters SET api_due=? WHERE name=?",
                        (at + self._draw("apiserver", self.cluster), self.cluster))
            for other in con.execute(
                    "SELECT name FROM nodes WHERE cluster=? AND role='controlplane' "
                    "AND state='running' AND join_due IS NULL AND name!=? "
                    "AND COALESCE(etcd_data, '') != 'stale'",
                    (self.cluster, name)).fetchall():
                con.execute("UPDATE nodes SET join_due=? WHERE name=?",
                            (at + self._draw("etcd_join", other["name"]), other["name"]))

    def _on_api(self, con: sqlite3.Connection, _cluster: str, at: float) -> None:
        con.execute("UPDATE clusters SET api_due=NULL, api_up_at=? WHERE name=?",
                    (at, self.cluster))
        self._event(con, at, None, "api-up")
        for row in con.execute("SELECT name FROM nodes WHERE cluster=? AND state='running'",
                               (self.cluster,)).fetchall():
            con.execute("UPDATE nodes SET ready_due=? WHERE name=?",
                        (at + self._draw("node_ready", row["name"]), row["name"]))

    def _on_ready(self, con: sqlite3.Connection, name: str, at: float) -> None:
        con.execute("UPDATE nodes SET ready_due=NULL, ready_at=? WHERE name=?", (at, name))
        self._event(con, at, name, "ready")

    def _member_count(self, con: sqlite3.Connection) -> int:
        return con.execute("SELECT COUNT(*) FROM etcd_members WHERE cluster=?",
                           (self.cluster,)).fetchone()[0]

    def _member_states(self, con: sqlite3.Connection) -> list[str | None]:
        """The state of each etcd member's node (None: the node is gone)."""
        return [row[0] for row in con.execute(
            "SELECT n.state FROM etcd_members m LEFT JOIN nodes n ON n.name = m.node "
            "WHERE m.cluster=?", (self.cluster,))]

    def _available(self, con: sqlite3.Connection) -> bool:
        """Whether the Kubernetes API answers now: it was started and a majority of etcd
        members is running (a control plane rebooting for an upgrade does not count)."""
        cl = self._cluster_row(con)
        if cl is None or cl["api_up_at"] is None or cl["quorum_lost_at"] is not None:
            return False
        states = self._member_states(con)
        return sum(1 for s in states if s in ALIVE) >= len(states) // 2 + 1

    def _check_quorum(self, con: sqlite3.Connection, at: float) -> None:
        """Quorum is lost for good once a majority of members can never answer again
        (dead or deleted); a member away for a reboot only makes etcd unavailable."""
        states = self._member_states(con)
        returning = sum(1 for s in states if s not in ("dead", None))
        if states and returning < len(states) // 2 + 1:
            con.execute("UPDATE clusters SET quorum_lost_at=COALESCE(quorum_lost_at, ?), "
                        "api_up_at=NULL, api_due=NULL WHERE name=?", (at, self.cluster))
            # no API server, so no kubelet can report: every node goes NotReady for good
            con.execute("UPDATE nodes SET ready_at=NULL, ready_due=NULL WHERE cluster=?",
                        (self.cluster,))
            self._event(con, at, None, "quorum-lost")

    def _cluster_row(self, con: sqlite3.Connection) -> sqlite3.Row | None:
        return con.execute("SELECT * FROM clusters WHERE name=?", (self.cluster,)).fetchone()

    def next_change_at(self, node: str | None = None) -> float | None:
        """When the next scheduled change is due (None: nothing will change by itself).

        With `node`, only changes that can alter what that node reports: its own, the
        control planes' (etcd membership, the API's availability) and the API server's; a
        wait for one node then wakes for those alone, not for every node of the cluster.
        """
        scope = "" if node is None else " AND (name=:n OR role='controlplane')"
        with self.store.transaction() as con:
            self._advance(con)
            row = con.execute(
                f"SELECT MIN(t) FROM (SELECT due AS t FROM nodes WHERE cluster=:c{scope} "
                f"UNION ALL SELECT join_due FROM nodes WHERE cluster=:c{scope} "
                f"UNION ALL SELECT ready_due FROM nodes WHERE cluster=:c{scope} "
                "UNION ALL SELECT api_due FROM clusters WHERE name=:c)",
                {"c": self.cluster, "n": node}).fetchone()
            return row[0]
