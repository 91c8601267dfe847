"""The emulated datacenter: what the infrastructure, the Talos API and Kubernetes
answer about one cluster's nodes (the engine in engine.py keeps their time).

Talos rules hold: config goes in insecurely only in maintenance mode, etcd is
bootstrapped once, control planes join etcd as they come up, an upgrade that
would lose quorum is refused, a failed upgrade rolls back (A/B images), and a
cluster that loses etcd quorum stays broken.
"""

from __future__ import annotations

import hashlib
import sqlite3

from drover.errors import (
    AlreadyBootstrapped,
    NodeNotFound,
    NotInMaintenance,
    ProviderError,
    QuorumError,
    TalosError,
    TransientError,
)
from drover.lab.engine import ALIVE, LabEngine
from drover.lab.model import LabCluster, LabNode, installed_versions, version_of
from drover.lab.store import CommitThenRaise
from drover.spec import NodeSpec


class Datacenter(LabEngine):
    """One cluster's view of the lab file; settings (profile, faults) come from its spec."""

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

    def nodes(self) -> list[LabNode]:
        with self.store.transaction() as con:
            self._advance(con)
            rows = con.execute("SELECT * FROM nodes WHERE cluster=? ORDER BY name",
                               (self.cluster,)).fetchall()
            available = self._available(con)
            return [self._node(con, r, available) for r in rows]

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
                cl["bootstraps"] if cl else 0, self._available(con), lost,
                [(m["node"], m["member_id"], m["state"] in ALIVE) for m in members])

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
            version, kubernetes = installed_versions(config)
            if node.state == "maintenance":
                if not insecure:
                    raise TalosError(f"{name}: node is in maintenance mode and has no "
                                     "certificates yet; apply its first config insecurely")
                con.execute("UPDATE nodes SET state='installing', since=?, due=?, "
                            "config_hash=?, talos_version=?, kubernetes_version=? WHERE name=?",
                            (now, now + self._draw("install", name), digest, version,
                             kubernetes, name))
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

    # ---- day 2: upgrades and etcd membership -----------------------------------
    def upgrade(self, name: str, image: str) -> None:
        """Write the new installer image and reboot into it, keeping data (Talos A/B)."""
        target = version_of(image)
        if target is None:
            raise TalosError(f"{name}: installer image {image!r} has no version tag")
        with self.store.transaction() as con:
            now = self._advance(con)
            node = self._reachable(con, name)
            if node.state != "running" or node.talos_version == target:
                if node.talos_version == target:
                    return  # already there: upgrading again changes nothing
                raise TalosError(f"{name}: cannot upgrade while the node is {node.state}")
            if node.role == "controlplane":
                self._refuse_quorum_loss(con, name)
            con.execute("UPDATE nodes SET state='upgrading', since=?, due=?, target_version=?, "
                        "ready_at=NULL, ready_due=NULL WHERE name=?",
                        (now, now + self._draw("install", name, 1), target, name))
            self._event(con, now, name, "upgrading")

    def _refuse_quorum_loss(self, con: sqlite3.Connection, name: str) -> None:
        """Talos refuses to take down a control plane unless every etcd member is healthy."""
        members = con.execute(
            "SELECT m.node, n.state FROM etcd_members m LEFT JOIN nodes n ON n.name = m.node "
            "WHERE m.cluster=?", (self.cluster,)).fetchall()
        sick = [m["node"] for m in members if m["state"] not in ALIVE]
        if sick:
            raise QuorumError(f"{name}: etcd member {sick[0]} is not healthy; all members "
                              "must be healthy to perform an upgrade")

    def upgrade_kubernetes(self, version: str) -> list[str]:
        """upgrade-k8s: control-plane static pods, then every kubelet; returns the nodes done."""
        with self.store.transaction() as con:
            now = self._advance(con)
            if not self._available(con):
                raise TalosError(f"{self.cluster}: upgrade-k8s needs the Kubernetes API up")
            rows = con.execute("SELECT name FROM nodes WHERE cluster=? AND state='running' "
                               "ORDER BY role, name", (self.cluster,)).fetchall()
            for row in rows:
                con.execute("UPDATE nodes SET kubernetes_version=? WHERE name=?",
                            (version, row["name"]))
                self._event(con, now, row["name"], f"kubelet {version}")
            return [row["name"] for row in rows]

    def remove_member(self, name: str) -> None:
        """etcd remove-member: drop `name`'s member; refused (like etcd's strict reconfig
        check) when the members left running would not make a quorum."""
        with self.store.transaction() as con:
            now = self._advance(con)
            rows = con.execute(
                "SELECT m.node, n.state FROM etcd_members m LEFT JOIN nodes n "
                "ON n.name = m.node WHERE m.cluster=?", (self.cluster,)).fetchall()
            if name not in {r["node"] for r in rows}:
                return
            left = [r["state"] for r in rows if r["node"] != name]
            if left and sum(1 for s in left if s in ALIVE) < len(left) // 2 + 1:
                raise QuorumError(f"{name}: etcdserver: unhealthy cluster: removing this member "
                                  f"leaves {sum(1 for s in left if s in ALIVE)} of "
                                  f"{len(left)} members running")
            if con.execute("DELETE FROM etcd_members WHERE cluster=? AND node=?",
                           (self.cluster, name)).rowcount:
                self._event(con, now, name, "etcd-member-removed")
                self._check_quorum(con, now)

    # ---- Kubernetes: cordon, drain --------------------------------------------------
    def set_cordoned(self, name: str, cordoned: bool) -> None:
        with self.store.transaction() as con:
            now = self._advance(con)
            if self._get(con, name).cordoned != cordoned:
                con.execute("UPDATE nodes SET cordoned=? WHERE name=?", (int(cordoned), name))
                self._event(con, now, name, "cordoned" if cordoned else "uncordoned")

    def evict_pods(self, name: str) -> bool:
        """One round of evictions; False while a PodDisruptionBudget refuses (HTTP 429)."""
        with self.store.transaction() as con:
            now = self._advance(con)
            self._get(con, name)
            if self._fault("drain-blocked", name):
                return False
            self._event(con, now, name, "drained")
            return True
