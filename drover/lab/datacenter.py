"""The emulated datacenter: nodes walking the Talos lifecycle, etcd, and faults.

No background process runs. Each node row holds its state, when it entered
it, and when its next change is due; every operation first advances the
cluster to "now" by the clock, applying due changes in time order. Talos
rules hold: config goes in insecurely only in maintenance mode, etcd is
bootstrapped once, control planes join etcd as they come up, and a cluster
that loses etcd quorum stays broken.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import sqlite3
from pathlib import Path

from drover.errors import (
    AlreadyBootstrapped,
    NodeNotFound,
    NotInMaintenance,
    ProviderError,
    TalosError,
    TransientError,
)
from drover.lab.clock import Clock, SystemClock
from drover.lab.model import LabCluster, LabNode, installed_version
from drover.lab.profiles import Profile, load_profile
from drover.lab.store import CommitThenRaise, LabStore, VirtualClock
from drover.spec import ClusterSpec, LabFault, NodeSpec

#: state -> (next state, profile step that sets how long the state lasts)
LIFECYCLE = {
    "created": ("booting", "create"),
    "booting": ("maintenance", "boot"),
    "installing": ("rebooting", "install"),
    "rebooting": ("running", "reboot"),
}
ALIVE = ("running",)


class Datacenter:
    """One cluster's view of the lab file; settings (profile, faults) come from its spec."""

    def __init__(self, spec: ClusterSpec, path: Path, clock: Clock | None = None) -> None:
        settings = spec.spec.provider
        self.cluster = spec.name
        self.store = LabStore(path)
        if clock is None:
            clock = VirtualClock(self.store) if settings.clock == "virtual" else SystemClock()
        self.clock = clock
        self.profile: Profile = load_profile(settings.profile, settings.compression)
        self.faults: list[LabFault] = list(settings.faults)
        self.network = ipaddress.ip_network(settings.network)
        self.seed = settings.seed

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
        con.execute("UPDATE nodes SET state=?, since=?, due=? WHERE name=?", (new, at, due, name))
        self._event(con, at, name, new)
        if new == "running":
            self._on_running(con, name, at)

    def _on_running(self, con: sqlite3.Connection, name: str, at: float) -> None:
        dies = self._fault("dies", name)
        cl = self._cluster_row(con)
        con.execute("UPDATE nodes SET running_at=?, due=? WHERE name=?",
                    (at, at + dies.after_seconds if dies else None, name))
        role = con.execute("SELECT role FROM nodes WHERE name=?", (name,)).fetchone()["role"]
        if role == "controlplane" and self._member_count(con) > 0:
            con.execute("UPDATE nodes SET join_due=? WHERE name=?",
                        (at + self._draw("etcd_join", name), name))
        if cl and cl["api_up_at"] is not None:
            con.execute("UPDATE nodes SET ready_due=? WHERE name=?",
                        (at + self._draw("node_ready", name), name))

    def _on_join(self, con: sqlite3.Connection, name: str, at: float) -> None:
        first = self._member_count(con) == 0
        member_id = hashlib.sha256(f"{self.cluster}/{name}/{at}".encode()).hexdigest()[:16]
        con.execute("INSERT OR REPLACE INTO etcd_members VALUES (?, ?, ?, ?)",
                    (self.cluster, name, member_id, at))
        con.execute("UPDATE nodes SET join_due=NULL WHERE name=?", (name,))
        self._event(con, at, name, "etcd-member")
        if first:  # the API server starts once etcd has a member; others may now join
            con.execute("UPDATE clusters SET api_due=? WHERE name=?",
                        (at + self._draw("apiserver", self.cluster), self.cluster))
            for other in con.execute(
                    "SELECT name FROM nodes WHERE cluster=? AND role='controlplane' "
                    "AND state='running' AND join_due IS NULL AND name!=?",
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

    def _check_quorum(self, con: sqlite3.Connection, at: float) -> None:
        members = con.execute(
            "SELECT n.state FROM etcd_members m LEFT JOIN nodes n ON n.name = m.node "
            "WHERE m.cluster=?", (self.cluster,)).fetchall()
        healthy = sum(1 for m in members if m["state"] in ALIVE)
        if members and healthy < len(members) // 2 + 1:
            con.execute("UPDATE clusters SET quorum_lost_at=COALESCE(quorum_lost_at, ?), "
                        "api_up_at=NULL, api_due=NULL WHERE name=?", (at, self.cluster))
            # no API server, so no kubelet can report: every node goes NotReady for good
            con.execute("UPDATE nodes SET ready_at=NULL, ready_due=NULL WHERE cluster=?",
                        (self.cluster,))
            self._event(con, at, None, "quorum-lost")

    def _cluster_row(self, con: sqlite3.Connection) -> sqlite3.Row | None:
        return con.execute("SELECT * FROM clusters WHERE name=?", (self.cluster,)).fetchone()

    def next_change_at(self) -> float | None:
        """When the next scheduled change is due (None: nothing will change by itself)."""
        with self.store.transaction() as con:
            self._advance(con)
            row = con.execute(
                "SELECT MIN(t) FROM (SELECT due AS t FROM nodes WHERE cluster=:c "
                "UNION ALL SELECT join_due FROM nodes WHERE cluster=:c "
                "UNION ALL SELECT ready_due FROM nodes WHERE cluster=:c "
                "UNION ALL SELECT api_due FROM clusters WHERE name=:c)",
                {"c": self.cluster}).fetchone()
            return row[0]

    # ---- reading ------------------------------------------------------------
    def _node(self, con: sqlite3.Connection, row: sqlite3.Row) -> LabNode:
        member = con.execute("SELECT 1 FROM etcd_members WHERE cluster=? AND node=?",
                             (self.cluster, row["name"])).fetchone() is not None
        return LabNode(row["name"], row["cluster"], row["role"], row["pool"], row["state"],
                       row["since"], row["address"], row["talos_version"], row["config_hash"],
                       row["ready_at"] is not None and row["state"] == "running", member)

    def nodes(self) -> list[LabNode]:
        with self.store.transaction() as con:
            self._advance(con)
            rows = con.execute("SELECT * FROM nodes WHERE cluster=? ORDER BY name",
                               (self.cluster,)).fetchall()
            return [self._node(con, r) for r in rows]

    def node(self, name: str) -> LabNode:
        with self.store.transaction() as con:
            self._advance(con)
            return self._get(con, name)

    def _get(self, con: sqlite3.Connection, name: str) -> LabNode:
        row = con.execute("SELECT * FROM nodes WHERE name=? AND cluster=?",
                          (name, self.cluster)).fetchone()
        if row is None:
            raise NodeNotFound(f"{name}: no such node in lab cluster {self.cluster!r}")
        return self._node(con, row)

    def status(self) -> LabCluster:
        with self.store.transaction() as con:
            self._advance(con)
            cl = self._cluster_row(con)
            members = con.execute(
                "SELECT m.node, m.member_id, n.state FROM etcd_members m LEFT JOIN nodes n "
                "ON n.name = m.node WHERE m.cluster=? ORDER BY m.node", (self.cluster,)).fetchall()
            lost = bool(cl and cl["quorum_lost_at"] is not None)
            return LabCluster(
                self.cluster, bool(cl and cl["bootstrapped_at"] is not None),
                cl["bootstraps"] if cl else 0,
                bool(cl and cl["api_up_at"] is not None) and not lost,
                lost, [(m["node"], m["member_id"], m["state"] in ALIVE) for m in members])

    def events(self) -> list[tuple[float, str | None, str]]:
        with self.store.connect() as con:
            return [(r["at"], r["node"], r["what"]) for r in con.execute(
                "SELECT at, node, what FROM events WHERE cluster=? ORDER BY id", (self.cluster,))]

    # ---- infrastructure -------------------------------------------------------
    def record_image(self, ref: str) -> None:
        with self.store.transaction() as con:
            con.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?)",
                        (self.cluster, ref, self.clock.now()))

    def create(self, node: NodeSpec, image: str) -> LabNode:
        """Create and start a VM; an existing one of that name is returned as it is."""
        with self.store.transaction() as con:
            now = self._advance(con)
            existing = con.execute("SELECT * FROM nodes WHERE name=?", (node.name,)).fetchone()
            if existing is not None and existing["cluster"] != self.cluster:
                raise ProviderError(f"{node.name}: the name is taken by a node of cluster "
                                    f"{existing['cluster']!r}; rename this cluster or pool")
            if existing is not None:
                return self._node(con, existing)
            if self._take_fault(con, "create-fails", node.name):
                raise CommitThenRaise(TransientError(
                    f"{node.name}: lab: VM create failed (injected fault)"))
            con.execute("INSERT OR IGNORE INTO clusters (name) VALUES (?)", (self.cluster,))
            con.execute(
                "INSERT INTO nodes (name, cluster, role, pool, state, since, due, address, image,"
                " cpus, memory_mib, disk_gib, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (node.name, self.cluster, node.role, node.pool, "created", now,
                 now + self._draw("create", node.name), self._free_address(con), image,
                 node.size.cpus, node.size.memory_mib, node.size.disk_gib, now))
            self._event(con, now, node.name, "created")
            return self._get(con, node.name)

    def _free_address(self, con: sqlite3.Connection) -> str:
        used = {r[0] for r in con.execute("SELECT address FROM nodes")}
        # the first ten addresses stay free for the gateway and an endpoint VIP in the spec
        for host in list(self.network.hosts())[9:]:
            if str(host) not in used:
                return str(host)
        raise ProviderError(f"lab network {self.network} has no free address left; "
                            "widen spec.provider.network")

    def delete(self, name: str) -> None:
        """Delete a VM; succeeds if it is already gone. A cluster with no VM left is forgotten."""
        with self.store.transaction() as con:
            now = self._advance(con)
            if con.execute("DELETE FROM nodes WHERE name=? AND cluster=?",
                           (name, self.cluster)).rowcount:
                self._event(con, now, name, "deleted")
                self._check_quorum(con, now)
            if not con.execute("SELECT 1 FROM nodes WHERE cluster=?", (self.cluster,)).fetchone():
                for table in ("clusters", "etcd_members", "fault_uses", "images"):
                    column = "name" if table == "clusters" else "cluster"
                    con.execute(f"DELETE FROM {table} WHERE {column}=?", (self.cluster,))

    # ---- the Talos API ----------------------------------------------------------
    def _reachable(self, con: sqlite3.Connection, name: str) -> LabNode:
        node = self._get(con, name)
        if self._take_fault(con, "talos-api-errors", name):
            raise CommitThenRaise(TransientError(
                f"{name}: Talos API: rpc error: code = Unavailable (injected fault)"))
        if node.state not in ("maintenance", "running"):
            raise TransientError(f"{name}: Talos API not reachable while the node is "
                                 f"{node.state}")
        return node

    def apply_config(self, name: str, config: str, insecure: bool) -> None:
        with self.store.transaction() as con:
            now = self._advance(con)
            node = self._reachable(con, name)
            digest = hashlib.sha256(config.encode()).hexdigest()
            version = installed_version(config)
            if node.state == "maintenance":
                if not insecure:
                    raise TalosError(f"{name}: node is in maintenance mode and has no "
                                     "certificates yet; apply its first config insecurely")
                con.execute("UPDATE nodes SET state='installing', since=?, due=?, "
                            "config_hash=?, talos_version=? WHERE name=?",
                            (now, now + self._draw("install", name), digest, version, name))
                self._event(con, now, name, "installing")
                return
            if insecure:
                raise NotInMaintenance(f"{name}: node already has a config; the insecure "
                                       "maintenance API is closed (use the talosconfig)")
            con.execute("UPDATE nodes SET config_hash=? WHERE name=?", (digest, name))
            self._event(con, now, name, "config-updated")

    def bootstrap(self, name: str) -> None:
        with self.store.transaction() as con:
            now = self._advance(con)
            node = self._reachable(con, name)
            if node.role != "controlplane" or node.state != "running":
                raise TalosError(f"{name}: bootstrap needs a running control-plane node")
            cl = self._cluster_row(con)
            if cl["bootstrapped_at"] is not None:
                raise AlreadyBootstrapped(f"{name}: rpc error: code = AlreadyExists desc = "
                                          "etcd data directory is not empty")
            con.execute("UPDATE clusters SET bootstrapped_at=?, bootstrap_node=?, "
                        "bootstraps=bootstraps+1 WHERE name=?", (now, name, self.cluster))
            con.execute("UPDATE nodes SET join_due=? WHERE name=?",
                        (now + self._draw("bootstrap", name), name))
            self._event(con, now, name, "bootstrap")

    def kill(self, name: str) -> None:
        """Make a node die now, whatever it was doing (power loss): for tests and drills."""
        with self.store.transaction() as con:
            now = self._advance(con)
            if self._get(con, name).state == "dead":
                return
            con.execute("UPDATE nodes SET state='dead', since=?, due=NULL, join_due=NULL, "
                        "ready_due=NULL, ready_at=NULL WHERE name=?", (now, name))
            self._event(con, now, name, "dead")
            self._check_quorum(con, now)
