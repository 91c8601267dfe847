"""What must hold after every attempt of a soak step, read from the lab and $DROVER_HOME.

- etcd quorum is never lost by drover's own hand (only a destroy may take members away,
  and faults may kill nodes); at most one etcd member is down by drover's hand at a time;
- during an upgrade never more than maxUnavailable workers are cordoned or NotReady;
- no orphan or duplicate node: a step that finished leaves each pool at its count, all
  running and Ready; a fresh deploy that failed leaves no node; a destroy leaves nothing;
- etcd is bootstrapped once (a recovery from a snapshot is not a bootstrap);
- the cluster's secrets never change while it has nodes;
- an operation that ended (finished or failed) leaves the lease free.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drover import lease, ledger
from drover.home import drover_home
from drover.spec import ClusterSpec

if TYPE_CHECKING:
    from tests.chaos.soak import World

STAGES = {"created", "booting", "maintenance", "installing", "rebooting", "running",
          "upgrading", "dead"}


@dataclass
class Window:
    op: str
    since: int          # index of the first event of this attempt
    nodes_before: int


def ledger_rows(cluster: str) -> int:
    conn = lease.connect()
    try:
        conn.execute(ledger.SCHEMA)
        return conn.execute("SELECT COUNT(*) FROM created_nodes WHERE cluster = ?",
                            (cluster,)).fetchone()[0]
    finally:
        conn.close()


def secrets_digest(cluster: str) -> str | None:
    path = drover_home() / "clusters" / cluster / "secrets.yaml"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


class Tracker:
    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.secrets: str | None = None

    def begin(self, world: World, op: str) -> Window:
        return Window(op, len(world.lab.events()), len(world.lab.nodes()))

    def snapshot(self, world: World) -> tuple[Any, ...]:
        """What an operation that was refused must not have changed."""
        nodes = tuple((n.name, n.state, n.config_hash, n.cordoned) for n in world.lab.nodes())
        return nodes, len(world.lab.events())  # read after nodes(), which catches up on time

    def check(self, world: World, window: Window, op: str, outcome: str | None) -> None:
        fail = world.violations.append
        lab, status = world.lab, world.lab.status()
        nodes = lab.nodes()
        if status.bootstraps > 1:
            fail(f"{op}: etcd bootstrapped {status.bootstraps} times")
        self._replay(world, window, op)
        digest = secrets_digest(self.spec.name)
        if nodes and digest is None:
            fail(f"{op}: the cluster has nodes but its secrets are gone")
        if digest is not None:
            if self.secrets is not None and digest != self.secrets and nodes:
                fail(f"{op}: the cluster's secrets changed while it had nodes")
            self.secrets = digest if nodes or self.secrets is None else self.secrets
        if outcome != "killed" and lease.holder(self.spec.name, world.clock) is not None:
            fail(f"{op}: the lease is still held after the operation ended ({outcome})")
        if outcome is None:
            self._finished(world, op, nodes)
        elif outcome != "killed" and op == "deploy" and window.nodes_before == 0 and nodes \
                and not status.bootstrapped:
            fail(f"deploy: a fresh deploy failed ({outcome}) and left "
                 f"{', '.join(n.name for n in nodes)}")

    def _finished(self, world: World, op: str, nodes: list[Any]) -> None:
        fail = world.violations.append
        if op == "destroy":
            if nodes:
                fail(f"destroy finished but {', '.join(n.name for n in nodes)} remain")
            if (drover_home() / "clusters" / self.spec.name).exists():
                fail("destroy finished but the cluster's folder remains")
            if ledger_rows(self.spec.name):
                fail("destroy finished but the ledger still lists nodes")
            self.secrets = None
            return
        if op == "recover" or not (world.deployed or op == "deploy"):
            return
        for pool in self.spec.pools():
            have = [n for n in nodes if n.pool == pool.name]
            if len(have) != pool.count:
                fail(f"{op} finished with {len(have)} node(s) in pool {pool.name}, "
                     f"declared {pool.count}: {', '.join(n.name for n in have)}")
        stray = [n.name for n in nodes if n.pool not in {p.name for p in self.spec.pools()}]
        # a node a fault killed is the fault's doing (heal replaces it); any other must serve
        # cordons are an upgrade's to lift (a killed one leaves its node cordoned until re-run)
        sick = [n.name for n in nodes if n.state != "dead"
                and (n.state != "running" or not n.ready or (n.cordoned and op == "upgrade"))]
        if stray:
            fail(f"{op} finished with nodes outside every pool: {', '.join(stray)}")
        if sick and op != "heal":
            fail(f"{op} finished with nodes not running, Ready and uncordoned: "
                 f"{', '.join(sick)}")

    def _replay(self, world: World, window: Window, op: str) -> None:
        """Walk every event; from this attempt's first one, count the etcd members down by
        drover's hand and the unavailable workers."""
        fail = world.violations.append
        state: dict[str, str] = {}
        members: set[str] = set()
        cordoned: set[str] = set()
        ready: set[str] = set()
        workers = {n.name for n in world.lab.nodes() if n.role == "worker"}
        budget = self.spec.spec.upgrade.max_unavailable
        last = ""
        for i, (_, node, what) in enumerate(world.lab.events()):
            previous, last = last, what
            if what in STAGES:
                state[node] = what
                if what != "running":
                    ready.discard(node)
            elif what == "ready":
                ready.add(node)
            elif what == "etcd-member":
                members.add(node)
            elif what in ("etcd-member-removed", "deleted"):
                members.discard(node)
                state.pop(node, None) if what == "deleted" else None
            elif what == "ephemeral-wiped":
                members.discard(node)
            elif what.startswith("etcd-recovered"):
                members.clear()  # a new etcd of one member, which joins as it starts
            elif what == "cordoned":
                cordoned.add(node)
            elif what == "uncordoned":
                cordoned.discard(node)
            if i < window.since or op in ("destroy", "recover"):
                continue
            # a failed fresh deploy deleting what it made may end etcd: that is its clean-up
            cleanup = op == "deploy" and window.nodes_before == 0 and previous == "deleted"
            if what == "quorum-lost" and not cleanup \
                    and not any(state.get(m) == "dead" for m in members):
                fail(f"{op}: etcd lost quorum by drover's own hand (event {i})")
            down = [m for m in members if state.get(m) not in ("running", "dead")]
            if len(down) > 1:
                fail(f"{op}: {len(down)} etcd members down at once: {', '.join(sorted(down))}")
            if op == "upgrade":
                out = [w for w in workers if state.get(w) not in (None, "dead")
                       and (w in cordoned or w not in ready)]
                if len(out) > budget:
                    fail(f"upgrade: {len(out)} workers unavailable at once (maxUnavailable "
                         f"{budget}): {', '.join(sorted(out))}")
            if world.violations:
                return

    def final(self, world: World) -> None:
        return None
