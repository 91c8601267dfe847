"""etcd in the lab: membership changes, snapshots and disaster recovery, by Talos's rules.

A snapshot (`talosctl etcd snapshot`) needs a member with quorum and records in the lab file
what etcd held at that moment: its members, its revision (the lab's event counter stands for
it) and which nodes were cordoned (the Kubernetes data a restore brings back). Recovery follows
Talos's disaster-recovery procedure: a reset wiping EPHEMERAL empties a control plane's etcd
data and reboots it (its etcd then waits, Preparing); a bootstrap from the snapshot
(`--recover-from`) on one control plane whose etcd is empty starts a new one-member etcd
holding the snapshot's data, and the API comes back; every other control plane joins as a new
member once its data is empty, while one still holding the lost cluster's data never does
(etcd_data 'stale') until it is wiped. Nodes the snapshot knew that are gone stay gone. A
recovery is recorded apart from bootstraps (etcd_recoveries).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from drover.errors import AlreadyBootstrapped, QuorumError, TalosError
from drover.lab.engine import ALIVE, LabEngine

SNAPSHOT_FORMAT = "drover-lab-etcd-snapshot/v1"


def read_snapshot(payload: bytes) -> dict[str, Any]:
    """The content of a lab snapshot file, once its hash is checked (etcd's integrity check)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
        raise TalosError("bootstrap --recover-from: not an etcd snapshot of the lab "
                         f"({SNAPSHOT_FORMAT})")
    body = {k: v for k, v in doc.items() if k not in ("hash", "snapshot")}
    if _digest(body) != doc.get("hash"):
        raise TalosError("bootstrap --recover-from: snapshot file integrity check failed "
                         "(hash mismatch); take a new snapshot or use an older one")
    return doc


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]


class LabEtcd(LabEngine):
    """etcd membership, snapshots and recovery for one cluster of the lab."""

    def _holds_etcd_data(self, con: sqlite3.Connection, name: str) -> bool:
        """Whether the node's etcd data directory is not empty."""
        row = con.execute("SELECT etcd_data FROM nodes WHERE name=? AND cluster=?",
                          (name, self.cluster)).fetchone()
        if row["etcd_data"] is not None:  # empty, or stale: the lost etcd's data
            return bool(row["etcd_data"] == "stale")
        return con.execute("SELECT 1 FROM etcd_members WHERE cluster=? AND node=?",
                           (self.cluster, name)).fetchone() is not None

    def _has_quorum(self, con: sqlite3.Connection) -> bool:
        cl = self._cluster_row(con)
        states = self._member_states(con)
        return bool(cl is not None and cl["quorum_lost_at"] is None and states
                    and sum(1 for s in states if s in ALIVE) >= len(states) // 2 + 1)

    def etcd_state(self, name: str) -> str:
        """The etcd service's state as `talosctl service etcd` shows it: Running while the
        node holds etcd data, Preparing while it is empty (waiting to bootstrap or join)."""
        with self.store.transaction() as con:
            self._advance(con)
            node = self._reachable(con, name)
            if node.role != "controlplane":
                raise TalosError(f"{name}: service etcd: no such service (etcd runs on "
                                 "control planes only)")
            if node.state != "running":
                return "Waiting"
            return "Running" if self._holds_etcd_data(con, name) else "Preparing"

    def snapshot_etcd(self, name: str) -> bytes:
        """`etcd snapshot` through `name`: a consistent copy of etcd, as the file's bytes."""
        with self.store.transaction() as con:
            now = self._advance(con)
            node = self._reachable(con, name)
            if node.role != "controlplane" or node.state != "running":
                raise TalosError(f"{name}: etcd snapshot needs a running control plane")
            if not node.etcd_member or self._holds_etcd_data(con, name) is False:
                raise TalosError(f"{name}: etcd snapshot: etcd is not a member here; take the "
                                 "snapshot through a control plane whose etcd is healthy")
            if not self._has_quorum(con):
                raise QuorumError(f"{name}: etcd snapshot: etcdserver: no leader (etcd of "
                                  f"{self.cluster} has no quorum); restore the latest snapshot "
                                  f"instead: drover recover {self.cluster}")
            members = con.execute("SELECT node, member_id FROM etcd_members WHERE cluster=? "
                                  "ORDER BY node", (self.cluster,)).fetchall()
            cordoned = con.execute("SELECT name FROM nodes WHERE cluster=? AND cordoned=1 "
                                   "ORDER BY name", (self.cluster,)).fetchall()
            revision = con.execute("SELECT COALESCE(MAX(id), 0) FROM events WHERE cluster=?",
                                   (self.cluster,)).fetchone()[0]
            body = {"format": SNAPSHOT_FORMAT, "cluster": self.cluster, "taken_at": now,
                    "revision": revision, "members": [[m[0], m[1]] for m in members],
                    "cordoned": [c[0] for c in cordoned]}
            digest = _digest(body)
            snap_id = con.execute(
                "INSERT INTO etcd_snapshots (cluster, taken_at, node, revision, hash, data) "
                "VALUES (?,?,?,?,?,?)", (self.cluster, now, name, revision, digest,
                                         json.dumps(body, sort_keys=True))).lastrowid
            self._event(con, now, name, f"etcd-snapshot {snap_id} (revision {revision})")
            return json.dumps({**body, "hash": digest, "snapshot": snap_id},
                              sort_keys=True).encode()

    def reset_etcd(self, name: str) -> None:
        """`reset --graceful=false --reboot --system-labels-to-wipe=EPHEMERAL`: the node's
        etcd data is gone (it leaves no member behind on purpose) and it reboots."""
        with self.store.transaction() as con:
            now = self._advance(con)
            node = self._reachable(con, name)
            if node.state != "running":
                raise TalosError(f"{name}: reset needs a running node (it is {node.state})")
            resets = con.execute("SELECT COUNT(*) FROM events WHERE cluster=? AND node=? AND "
                                 "what='ephemeral-wiped'", (self.cluster, name)).fetchone()[0]
            con.execute("UPDATE nodes SET state='rebooting', since=?, due=?, join_due=NULL, "
                        "ready_due=NULL, ready_at=NULL, etcd_data=CASE role WHEN "
                        "'controlplane' THEN 'empty' ELSE etcd_data END WHERE name=?",
                        (now, now + self._draw("reboot", name, 100 + resets), name))
            self._event(con, now, name, "ephemeral-wiped")
            self._event(con, now, name, "rebooting")

    def recover_etcd(self, name: str, snapshot: bytes) -> None:
        """`bootstrap --recover-from`: a new etcd of one member, `name`, from the snapshot."""
        doc = read_snapshot(snapshot)
        with self.store.transaction() as con:
            now = self._advance(con)
            node = self._reachable(con, name)
            if node.role != "controlplane" or node.state != "running":
                raise TalosError(f"{name}: bootstrap needs a running control-plane node")
            if self._holds_etcd_data(con, name):
                raise AlreadyBootstrapped(f"{name}: rpc error: code = AlreadyExists desc = "
                                          "etcd data directory is not empty")
            if self._member_count(con) and self._has_quorum(con):
                raise TalosError(f"{name}: lab: etcd of {self.cluster} has quorum; a bootstrap "
                                 "from a snapshot here would start a second etcd (split brain)")
            row = con.execute("SELECT id FROM etcd_snapshots WHERE id=? AND cluster=? AND hash=?",
                              (doc.get("snapshot"), self.cluster, doc["hash"])).fetchone()
            if row is None or doc.get("cluster") != self.cluster:
                raise TalosError(f"{name}: bootstrap --recover-from: the snapshot was not taken "
                                 f"from cluster {self.cluster} (it is {doc.get('cluster')!r}'s)")
            self._restore(con, now, name, doc)

    def _restore(self, con: sqlite3.Connection, now: float, name: str,
                 doc: dict[str, Any]) -> None:
        # whoever still holds the lost etcd's data can never join the new one until wiped
        con.execute("UPDATE nodes SET etcd_data='stale' WHERE cluster=? AND name!=? AND "
                    "etcd_data IS NULL AND name IN (SELECT node FROM etcd_members "
                    "WHERE cluster=?)", (self.cluster, name, self.cluster))
        con.execute("DELETE FROM etcd_members WHERE cluster=?", (self.cluster,))
        con.execute("INSERT OR IGNORE INTO clusters (name) VALUES (?)", (self.cluster,))
        con.execute("UPDATE clusters SET bootstrapped_at=COALESCE(bootstrapped_at, ?), "
                    "bootstrap_node=COALESCE(bootstrap_node, ?), quorum_lost_at=NULL, "
                    "api_up_at=NULL, api_due=NULL WHERE name=?", (now, name, self.cluster))
        done = con.execute("SELECT COUNT(*) FROM etcd_recoveries WHERE cluster=?",
                           (self.cluster,)).fetchone()[0]
        con.execute("UPDATE nodes SET etcd_data=NULL, join_due=? WHERE name=?",
                    (now + self._draw("bootstrap", name, 100 + done), name))
        # the Kubernetes objects are the snapshot's again: cordons made since are undone
        cordoned = set(doc.get("cordoned") or ())
        for row in con.execute("SELECT name, cordoned FROM nodes WHERE cluster=?",
                               (self.cluster,)).fetchall():
            if bool(row["cordoned"]) != (row["name"] in cordoned):
                con.execute("UPDATE nodes SET cordoned=? WHERE name=?",
                            (int(row["name"] in cordoned), row["name"]))
                self._event(con, now, row["name"],
                            "cordoned" if row["name"] in cordoned else "uncordoned")
        con.execute("INSERT INTO etcd_recoveries (cluster, at, node, snapshot, revision) "
                    "VALUES (?,?,?,?,?)", (self.cluster, now, name, doc["snapshot"],
                                           doc["revision"]))
        self._event(con, now, name, f"etcd-recovered from snapshot {doc['snapshot']} "
                                    f"(revision {doc['revision']})")

    # ---- membership ------------------------------------------------------------------
    def _refuse_quorum_loss(self, con: sqlite3.Connection, name: str) -> None:
        """Talos refuses to take down a control plane unless every etcd member is healthy."""
        members = con.execute(
            "SELECT m.node, n.state FROM etcd_members m LEFT JOIN nodes n ON n.name = m.node "
            "WHERE m.cluster=?", (self.cluster,)).fetchall()
        sick = [m["node"] for m in members if m["state"] not in ALIVE]
        if sick:
            raise QuorumError(f"{name}: etcd member {sick[0]} is not healthy; all members "
                              "must be healthy to perform an upgrade")

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
