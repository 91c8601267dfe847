"""The emulated datacenter: what the infrastructure, the Talos API and Kubernetes
answer about one cluster's nodes (the engine in engine.py keeps their time).

Talos rules hold: config goes in insecurely only in maintenance mode, etcd is
bootstrapped once, control planes join etcd as they come up, an upgrade that
would lose quorum is refused, a failed upgrade rolls back (A/B images), and a
cluster that loses etcd quorum stays broken until it is restored from an etcd
snapshot (etcd.py: snapshots, EPHEMERAL wipes, bootstrap --recover-from).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import sqlite3

from drover.errors import (
    AlreadyBootstrapped,
    NotInMaintenance,
    ProviderError,
    TalosError,
    TransientError,
)
from drover.lab.engine import ALIVE
from drover.lab.etcd import LabEtcd
from drover.lab.model import LabCluster, LabNode, installed_versions, version_of
from drover.lab.store import CommitThenRaise
from drover.spec import NodeSpec


class Datacenter(LabEtcd):
    """One cluster's view of the lab file; settings (profile, faults) come from its spec."""

    # ---- reading ------------------------------------------------------------
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

    def status(self) -> LabCluster:
        with self.store.transaction() as con:
            self._advance(con)
            cl = self._cluster_row(con)
            members = con.execute(
                "SELECT m.node, m.member_id, n.state FROM etcd_members m LEFT JOIN nodes n "
                "ON n.name = m.node WHERE m.cluster=? ORDER BY m.node", (self.cluster,)).fetchall()
            lost = bool(cl and cl["quorum_lost_at"] is not None)
            recoveries = con.execute("SELECT COUNT(*) FROM etcd_recoveries WHERE cluster=?",
                                     (self.cluster,)).fetchone()[0]
            return LabCluster(
                self.cluster, bool(cl and cl["bootstrapped_at"] is not None),
                cl["bootstraps"] if cl else 0, self._available(con), lost,
                [(m["node"], m["member_id"], m["state"] in ALIVE) for m in members],
                recoveries)

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
                " cpus, memory_mib, disk_gib, created_at, etcd_data)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'empty')",
                (node.name, self.cluster, node.role, node.pool, "created", now,
                 now + self._draw("create", node.name), self._free_address(con), image,
                 node.size.cpus, node.size.memory_mib, node.size.disk_gib, now))
            self._event(con, now, node.name, "created")
            return self._get(con, node.name)

    def shortfalls(self, names: list[str]) -> list[str]:
        """What would stop creating `names` now: too few free addresses, names taken by a node
        of another cluster. Empty when all of them can be made."""
        with self.store.connect() as con:
            used = {r[0] for r in con.execute("SELECT address FROM nodes")}
            taken = {r["name"]: r["cluster"] for r in con.execute(
                "SELECT name, cluster FROM nodes WHERE cluster != ?", (self.cluster,))}
        hosts = self.network.num_addresses - (2 if self.network.version == 4 else 1)
        free = max(0, hosts - 9) - sum(1 for a in used if ipaddress.ip_address(a) in self.network)
        problems = []
        if len(names) > free:
            problems.append(f"lab network {self.network} has {free} free address(es), "
                            f"{len(names)} node(s) to create: short by {len(names) - free}; "
                            "widen spec.provider.network")
        problems += [f"{name}: the name is taken by a node of cluster {taken[name]!r}"
                     for name in names if name in taken]
        return problems

    def _free_address(self, con: sqlite3.Connection) -> str:
        """The first free host address past the reserved ten; the network's hosts are walked
        lazily (a /8 or an IPv6 /64 has far too many to list), at most one past each node."""
        used = {r[0] for r in con.execute("SELECT address FROM nodes")}
        # the first ten addresses stay free for the gateway and an endpoint VIP in the spec
        for host in itertools.islice(self.network.hosts(), 9, 9 + len(used) + 1):
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
                # the lab's etcd snapshots stay: restoring one into a rebuilt cluster is the
                # disaster-recovery path for a cluster that lost every control plane
                for table in ("clusters", "etcd_members", "fault_uses", "images",
                              "etcd_recoveries"):
                    column = "name" if table == "clusters" else "cluster"
                    con.execute(f"DELETE FROM {table} WHERE {column}=?", (self.cluster,))

    # ---- the Talos API ----------------------------------------------------------
    def apply_config(self, name: str, config: str, insecure: bool,
                     mode: str = "no-reboot") -> None:
        """Talos's apply-config: insecurely in maintenance mode (installs, then reboots into
        it), else authenticated; `mode` reboot takes the node down and back up with the new
        config (a control plane only while every etcd member is healthy)."""
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
                            "config_hash=?, config=?, talos_version=?, kubernetes_version=? "
                            "WHERE name=?", (now, now + self._draw("install", name), digest,
                                             config, version, kubernetes, name))
                self._event(con, now, name, "installing")
                return
            if insecure:
                raise NotInMaintenance(f"{name}: node already has a config; the insecure "
                                       "maintenance API is closed (use the talosconfig)")
            if mode == "reboot":
                if node.role == "controlplane":
                    self._refuse_quorum_loss(con, name)
                con.execute("UPDATE nodes SET state='rebooting', since=?, due=?, ready_at=NULL, "
                            "ready_due=NULL WHERE name=?",
                            (now, now + self._draw("reboot", name, 2), name))
                self._event(con, now, name, "rebooting")
            con.execute("UPDATE nodes SET config_hash=?, config=? WHERE name=?",
                        (digest, config, name))
            self._event(con, now, name, "config-updated")

    def machine_config(self, name: str) -> str | None:
        """The config the node runs (talosctl get machineconfig), None before its first."""
        with self.store.transaction() as con:
            self._advance(con)
            self._reachable(con, name)
            row = con.execute("SELECT config FROM nodes WHERE name=? AND cluster=?",
                              (name, self.cluster)).fetchone()
            return row["config"] if row else None

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
