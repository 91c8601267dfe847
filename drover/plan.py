"""Pure planning: compare what the spec declares with what exists, decide what to do.

No I/O here: the flows observe, this module decides, the tasks act on the
difference. An empty plan means the step is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drover.errors import DowngradeRefused, NodeNotFound, QuorumError, ReplacementUnfinished
from drover.spec import ClusterSpec, NodeSpec, split_node_name


@dataclass(frozen=True)
class ObservedNode:
    name: str
    role: str
    pool: str
    stage: str          # the Talos lifecycle stage, e.g. maintenance or running
    configured: bool
    ready: bool
    address: str
    talos_version: str | None
    kubernetes_version: str | None = None
    cordoned: bool = False


@dataclass(frozen=True)
class Observed:
    nodes: dict[str, ObservedNode]
    bootstrapped: bool

    @property
    def empty(self) -> bool:
        return not self.nodes


@dataclass(frozen=True)
class DeployPlan:
    create: list[NodeSpec] = field(default_factory=list)
    configure: list[NodeSpec] = field(default_factory=list)
    bootstrap: bool = False
    fresh: bool = False                                   # nothing existed before this run
    unexpected: list[str] = field(default_factory=list)   # beyond what the spec declares

    @property
    def empty(self) -> bool:
        return not (self.create or self.configure or self.bootstrap)

    def describe(self, cluster: str) -> list[str]:
        lines = [f"{cluster}: will create {n.name} ({n.role})" for n in self.create]
        lines += [f"{cluster}: will push machine config to {n.name}" for n in self.configure]
        if self.bootstrap:
            lines.append(f"{cluster}: will bootstrap etcd on the first control plane")
        lines += [f"{cluster}: will leave {name} alone: beyond what the spec declares"
                  for name in self.unexpected]
        return lines or [f"{cluster}: nothing to do: every declared node exists and is configured"]


def natural(name: str) -> tuple[tuple[int, str], ...]:
    """Sort key that puts lab-cp-2 before lab-cp-10."""
    return tuple((int(part), "") if part.isdigit() else (-1, part)
                 for part in re.split(r"(\d+)", name))


def plan_deploy(spec: ClusterSpec, observed: Observed) -> DeployPlan:
    """What a deploy must do so that each pool has its count of configured, joined nodes.

    Pools are counted, not names matched: a replaced node's successor has a fresh
    number and still counts. Missing nodes take the lowest free numbers.
    """
    create: list[NodeSpec] = []
    configure: list[NodeSpec] = []
    unexpected: list[str] = []
    pools = {p.name for p in spec.pools()}
    for pool in spec.pools():
        existing = sorted((n for n in observed.nodes.values() if n.pool == pool.name),
                          key=lambda n: split_node_name(spec.name, n.name)[1])
        new = missing_nodes(spec, pool.name, [n.name for n in existing])
        create += new
        configure += [spec.node_named(n.name) for n in existing[:pool.count]
                      if not n.configured] + new
        unexpected += [n.name for n in existing[pool.count:]]
    unexpected += [n.name for n in observed.nodes.values() if n.pool not in pools]
    return DeployPlan(create=create, configure=configure, bootstrap=not observed.bootstrapped,
                      fresh=observed.empty, unexpected=sorted(unexpected))


def missing_nodes(spec: ClusterSpec, pool: str, existing: list[str]) -> list[NodeSpec]:
    """The nodes `pool` lacks to reach its count, numbered with the lowest free numbers."""
    count = next(p.count for p in spec.pools() if p.name == pool)
    used = {split_node_name(spec.name, name)[1] for name in existing}
    free = (i for i in range(1, count + len(used) + 1) if i not in used)
    return [spec.node(pool, next(free)) for _ in range(count - len(existing))]


@dataclass(frozen=True)
class UpgradePlan:
    talos_version: str
    batches: list[list[str]]          # control planes one at a time, then worker batches
    uncordon: list[str]               # already upgraded but left cordoned by a stopped run
    kubernetes_version: str | None    # None: every kubelet is already there
    not_running: list[str] = field(default_factory=list)  # dead or unfinished: upgrade none

    @property
    def empty(self) -> bool:
        return not (self.batches or self.uncordon or self.kubernetes_version)

    def describe(self, cluster: str) -> list[str]:
        lines = [f"{cluster}: will uncordon {name} (already on {self.talos_version})"
                 for name in self.uncordon]
        lines += [f"{cluster}: will upgrade {', '.join(batch)} to Talos {self.talos_version}"
                  for batch in self.batches]
        if self.kubernetes_version:
            lines.append(f"{cluster}: will upgrade Kubernetes to {self.kubernetes_version}")
        return lines or [f"{cluster}: nothing to do: every node runs Talos "
                         f"{self.talos_version} and the target Kubernetes"]


def version_key(version: str | None) -> tuple[int, ...]:
    """(major, minor, patch) of v1.13.9 or 1.36.3; () for a missing or unparsable one."""
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(part) for part in match.groups()) if match else ()


def refuse_downgrade(cluster: str, observed: Observed, talos_version: str,
                     kubernetes_version: str, allow: bool = False) -> None:
    """DowngradeRefused when a target is below what a node runs now (unless `allow`):
    Talos and Kubernetes support upgrades; a downgrade is a deliberate, rare act."""
    if allow:
        return
    for what, target, running in (
            ("Talos", talos_version, [(n.name, n.talos_version) for n in observed.nodes.values()]),
            ("Kubernetes", kubernetes_version,
             [(n.name, n.kubernetes_version) for n in observed.nodes.values()])):
        above = sorted((name, version) for name, version in running
                       if version_key(version) > version_key(target) and version_key(target))
        if above:
            name, version = above[0]
            raise DowngradeRefused(
                f"{cluster}: refusing to downgrade {what} to {target}: {name} runs {version} "
                f"({len(above)} node(s) above the target); pass --allow-downgrade "
                "(allow_downgrade=true) if this is really wanted")


def plan_upgrade(observed: Observed, talos_version: str, kubernetes_version: str,
                 max_unavailable: int) -> UpgradePlan:
    """Which nodes to upgrade, in what order: control planes first and one at a time (etcd
    quorum), then workers in batches of max_unavailable; nodes already there are skipped."""
    nodes = sorted(observed.nodes.values(),
                   key=lambda n: (n.role != "controlplane", natural(n.name)))
    behind = [n for n in nodes if n.talos_version != talos_version]
    control = [[n.name] for n in behind if n.role == "controlplane"]
    workers = [n.name for n in behind if n.role != "controlplane"]
    batches = control + [workers[i:i + max_unavailable]
                         for i in range(0, len(workers), max_unavailable)]
    uncordon = [n.name for n in nodes if n.cordoned and n.talos_version == talos_version]
    wanted = kubernetes_version.removeprefix("v")
    kubelets = {(n.kubernetes_version or "").removeprefix("v") for n in nodes}
    return UpgradePlan(talos_version, batches, uncordon,
                       kubernetes_version if kubelets - {wanted} else None,
                       [n.name for n in nodes if n.stage != "running"])


@dataclass(frozen=True)
class ReplacePlan:
    old: str
    new: NodeSpec
    control_plane: bool
    reachable: bool               # cordon and drain first; skipped for a dead node

    def describe(self, cluster: str) -> list[str]:
        lines = [f"{cluster}: will cordon and drain {self.old}" if self.reachable
                 else f"{cluster}: {self.old} is unreachable: will not cordon or drain it"]
        if self.control_plane:
            lines.append(f"{cluster}: will remove {self.old}'s etcd member")
        lines += [f"{cluster}: will create {self.new.name} and push its config; wait until "
                  "Ready" + (" and a healthy etcd member" if self.control_plane else ""),
                  f"{cluster}: will delete {self.old}"]
        return lines


def unfinished_replacements(spec: ClusterSpec, observed: Observed,
                            members: dict[str, bool]) -> list[str]:
    """Nodes whose replacement stopped part-way: in a pool holding more nodes than declared,
    retired already (cordoned, or a running control plane no longer an etcd member)."""
    counts = {p.name: p.count for p in spec.pools()}
    over = {pool for pool, count in counts.items()
            if sum(1 for n in observed.nodes.values() if n.pool == pool) > count}
    return sorted(n.name for n in observed.nodes.values() if n.pool in over and (
        n.cordoned or (n.role == "controlplane" and members and n.stage == "running"
                       and n.name not in members)))


def plan_replacement(spec: ClusterSpec, observed: Observed, members: dict[str, bool],
                     node: str) -> ReplacePlan:
    """How to replace `node`, or QuorumError when removing its etcd member would lose quorum.

    `members` maps each etcd member's node to whether it is healthy.
    """
    if node not in observed.nodes:
        raise NodeNotFound(f"{node}: no such node in cluster {spec.name!r}")
    unfinished = unfinished_replacements(spec, observed, members)
    if unfinished and node not in unfinished:
        raise ReplacementUnfinished(
            f"{node}: refusing: the replacement of {unfinished[0]} stopped part-way (it is "
            "drained or out of etcd, and its pool holds a node more than declared); finish it "
            f"first: drover replace {spec.name} {unfinished[0]}")
    old = observed.nodes[node]
    control_plane = old.role == "controlplane"
    if control_plane and node in members:
        remaining = {n: ok for n, ok in members.items() if n != node}
        healthy = sum(remaining.values())
        needed = len(remaining) // 2 + 1
        if not remaining:
            raise QuorumError(
                f"{node}: refusing to replace the only control plane: its etcd member holds "
                "the cluster's state; if it is lost, restore etcd from the latest snapshot "
                f"(drover recover {spec.name}), or destroy and redeploy")
        if healthy < needed:
            raise QuorumError(
                f"{node}: refusing to replace: removing its etcd member leaves "
                f"{healthy} healthy of {len(remaining)} members, and quorum needs {needed} "
                f"({sum(members.values())} of {len(members)} members are healthy now)")
    used = sorted(split_node_name(spec.name, n.name)[1] for n in observed.nodes.values()
                  if n.pool == old.pool)
    pool_count = next(p.count for p in spec.pools() if p.name == old.pool)
    if len(used) > pool_count and used[-1] != split_node_name(spec.name, node)[1]:
        # a successor from an attempt that stopped part-way: finish it, don't add another
        successor = spec.node(old.pool, used[-1])
    else:
        successor = spec.node(old.pool, used[-1] + 1)
    return ReplacePlan(node, successor, control_plane, old.stage == "running")
