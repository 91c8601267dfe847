"""etcd snapshots, and recovering a cluster whose etcd lost quorum from the latest one, by
Talos's disaster-recovery procedure. Snapshots live in $DROVER_HOME/clusters/<name>/
etcd-snapshots/ (0700; files 0600, named by the UTC moment they were taken; the newest KEEP
kept). A recovery plan names the snapshot, the control plane to bootstrap from it (one whose
etcd is already empty, if any), the surviving control planes whose etcd data is wiped first
(reset EPHEMERAL), and the control planes that are gone, which stay gone (deploy recreates
missing ones, replace swaps dead ones). Performing it wipes, waits until every surviving
control plane's etcd is Preparing, bootstraps the target from the snapshot, and waits until
the API is back with every surviving control plane a healthy member. A cluster whose etcd has
quorum is refused (a restore would discard what was written since), unless a recovery already
happened and control planes still hold the lost etcd's data: then only those are wiped.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from drover import retry
from drover.boundaries import confined
from drover.deploy import Infra
from drover.errors import (
    AlreadyBootstrapped,
    NodeFailed,
    QuorumError,
    StageTimeout,
    StateError,
    TalosError,
    TransientError,
)
from drover.home import cluster_dir
from drover.plan import missing_nodes
from drover.providers import Node
from drover.statefile import check_private, private_dir
from drover.talos import ClusterHealth

log = logging.getLogger(__name__)

KEEP = 10
SUFFIX = ".snapshot"


def snapshot_dir(cluster: str) -> Path:
    return private_dir(cluster_dir(cluster) / "etcd-snapshots")


def list_snapshots(cluster: str) -> list[Path]:
    """The cluster's etcd snapshots, oldest first."""
    return sorted(snapshot_dir(cluster).glob(f"etcd-*{SUFFIX}"))


def latest_snapshot(cluster: str) -> Path | None:
    found = list_snapshots(cluster)
    return found[-1] if found else None


def find_snapshot(cluster: str, name: str | None = None) -> Path | None:
    """The snapshot called `name` in the cluster's snapshot folder (only a file there: it may
    come from a flow parameter), or the latest one when no name is given."""
    if name is None:
        return latest_snapshot(cluster)
    folder = snapshot_dir(cluster)
    path = confined(folder / name, folder, "etcd snapshot")
    if not path.is_file():
        have = ", ".join(p.name for p in list_snapshots(cluster)) or "none"
        raise StateError(f"{path}: no such etcd snapshot of {cluster} (drover has: {have})")
    return path


def snapshot_source(infra: Infra, health: ClusterHealth | None = None) -> Node | None:
    """A running control plane whose etcd member is healthy, in a cluster with quorum."""
    health = health or infra.talos.cluster_health()
    if not health.bootstrapped or health.quorum_lost:
        return None
    healthy = {m.node for m in health.members if m.healthy}
    if len(healthy) < len(health.members) // 2 + 1:
        return None
    return next((n for n in sorted(infra.provider.list_nodes(), key=lambda n: n.name)
                 if n.role == "controlplane" and n.name in healthy), None)


def snapshot_etcd(infra: Infra, keep: int = KEEP) -> Path:
    """Take an etcd snapshot through a healthy control plane into the cluster's snapshot
    folder (0600), keep the newest `keep`; QuorumError when no etcd can give one."""
    name = infra.spec.name
    source = snapshot_source(infra)
    if source is None:
        raise QuorumError(f"{name}: no control plane with a healthy etcd member (with quorum) "
                          "to take an etcd snapshot through")
    folder = snapshot_dir(name)
    stamp = datetime.fromtimestamp(infra.clock.now(), UTC).strftime("%Y%m%dT%H%M%SZ")
    seq = 1 + len(list(folder.glob(f"etcd-{stamp}-*{SUFFIX}")))
    final = folder / f"etcd-{stamp}-{seq:03d}{SUFFIX}"
    part = folder / f".{final.name}.{secrets.token_hex(4)}.part"
    try:
        info = retry.call(retry.api_call(infra.clock), infra.talos.etcd_snapshot, source, part)
        os.chmod(part, 0o600)  # talosctl writes with its own mode; the folder kept it private
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    log.info("%s: etcd snapshot through %s: %s (%s)", name, source.name, final, info.describe())
    for old in list_snapshots(name)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


@dataclass(frozen=True)
class RecoveryPlan:
    cluster: str
    snapshot: Path | None        # None: etcd was restored already; only the rejoin is left
    target: str | None           # the control plane bootstrapped from the snapshot
    wipe: list[str]              # control planes whose etcd data is wiped first
    gone: list[str] = field(default_factory=list)  # dead or missing control planes

    def describe(self) -> list[str]:
        lines = []
        if self.wipe:
            lines.append(f"{self.cluster}: will wipe the etcd data (EPHEMERAL) of "
                         f"{', '.join(self.wipe)} and reboot them")
        if self.snapshot is not None:
            lines.append(f"{self.cluster}: will restore etcd from {self.snapshot.name} onto "
                         f"{self.target} (bootstrap --recover-from); the other control planes "
                         "join it as new members")
        if self.gone:
            lines.append(f"{self.cluster}: {', '.join(self.gone)} will stay gone: afterwards run "
                         f"drover deploy (missing nodes) or drover replace (dead ones)")
        return lines


def plan_recovery(infra: Infra, snapshot: str | None = None) -> RecoveryPlan:
    """How to bring etcd back from the snapshot named `snapshot` (default: the latest);
    QuorumError when etcd has not lost quorum (nothing to recover)."""
    name = infra.spec.name
    health = infra.talos.cluster_health()
    cps = sorted((n for n in infra.provider.list_nodes() if n.role == "controlplane"),
                 key=lambda n: n.name)
    running = [n for n in cps if infra.talos.machine_status(n).stage == "running"]
    states = {n.name: _etcd_state(infra, n) for n in running}
    running = [n for n in running if states[n.name] is not None]  # answers, has etcd
    gone = sorted({n.name for n in cps} - {n.name for n in running}) + [
        n.name for n in missing_nodes(infra.spec, "cp", [n.name for n in cps])]
    if health.quorum_lost:
        snap = find_snapshot(name, snapshot)
        if snap is None:
            raise StateError(f"{name}: etcd lost quorum and drover holds no etcd snapshot of it "
                             f"in {snapshot_dir(name)}; put one there (talosctl etcd snapshot, "
                             "or a raw copy of /var/lib/etcd/member/snap/db) and run again")
        check_private(snap)
        if not running:
            raise NodeFailed(f"{name}: no control plane runs to restore etcd onto; recreate the "
                             f"missing ones (drover deploy CONFIG: they wait for etcd), then "
                             f"drover recover {name}")
        target = next((n for n in running if states[n.name] == "Preparing"), running[0])
        wipe = [n.name for n in running if states[n.name] != "Preparing"]
        return RecoveryPlan(name, Path(snap), target.name, wipe, gone)
    members = {m.node for m in health.members}
    stale = [n.name for n in running if n.name not in members and states[n.name] == "Running"]
    if health.bootstrapped and health.healthy_members() and stale:
        return RecoveryPlan(name, None, None, stale, gone)
    why = ("it was never bootstrapped" if not health.bootstrapped
           else "it reports no member yet: starting after a bootstrap or a restore? run again "
                "in a minute" if not health.members
           else f"{health.healthy_members()} of {len(health.members)} members are healthy")
    raise QuorumError(f"{name}: etcd has not lost quorum ({why}); refusing to restore a "
                      "snapshot over it, which would discard what was written since; replace "
                      f"dead control planes instead (drover replace {name} NODE)")


def perform_recovery(infra: Infra, plan: RecoveryPlan) -> list[str]:
    """Carry out `plan`; returns the healthy etcd members at the end."""
    nodes = {n.name: n for n in infra.provider.list_nodes()}
    timeouts = infra.spec.spec.deployment.timeouts
    for name in plan.wipe:
        retry.call(retry.api_call(infra.clock), infra.talos.reset_etcd, nodes[name])
        log.info("%s: etcd data wiped (reset EPHEMERAL); rebooting", name)
    if plan.snapshot is not None and plan.target is not None:
        target = nodes[plan.target]
        empty = sorted({plan.target, *plan.wipe})

        def preparing() -> bool | None:
            return all(_etcd_state(infra, nodes[n]) == "Preparing" for n in empty) or None

        infra.wait(preparing, timeouts.configure_seconds, lambda: StageTimeout(
            "recover", plan.target or infra.spec.name, f"etcd of {', '.join(empty)} not "
            f"Preparing (empty) within {timeouts.configure_seconds:.0f}s of the wipe"))
        try:
            retry.call(retry.api_call(infra.clock), infra.talos.recover_etcd, target,
                       plan.snapshot)
        except AlreadyBootstrapped:
            # success only if an earlier attempt of ours got through (its answer was lost)
            if plan.target not in {m.node for m in infra.talos.cluster_health().members}:
                raise
        log.info("%s: etcd restored from %s", plan.target, plan.snapshot.name)
    expected = set(plan.wipe) | ({plan.target} if plan.target else set())

    def rejoined() -> list[str] | None:
        health = infra.talos.cluster_health()
        healthy = {m.node for m in health.members if m.healthy}
        done = health.api_up and not health.quorum_lost and expected <= healthy
        return sorted(healthy) if done else None

    return infra.wait(rejoined, timeouts.health_seconds, lambda: StageTimeout(  # type: ignore[return-value]
        "recover", infra.spec.name, f"etcd members {', '.join(sorted(expected))} not healthy "
        f"with the API up within {timeouts.health_seconds:.0f}s of the restore"))


def _etcd_state(infra: Infra, node: Node) -> str | None:
    """The node's etcd service state, or None when it does not answer (a probe)."""
    try:
        return infra.talos.etcd_state(node)
    except (TalosError, TransientError, StageTimeout):
        return None
