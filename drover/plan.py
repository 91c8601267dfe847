"""Pure planning: compare what the spec declares with what exists, decide what to do.

No I/O here: the flows observe, this module decides, the tasks act on the
difference. An empty plan means the step is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        lines = [f"{cluster}: create {n.name} ({n.role})" for n in self.create]
        lines += [f"{cluster}: push machine config to {n.name}" for n in self.configure]
        if self.bootstrap:
            lines.append(f"{cluster}: bootstrap etcd on the first control plane")
        lines += [f"{cluster}: leave {name} alone: beyond what the spec declares"
                  for name in self.unexpected]
        return lines or [f"{cluster}: nothing to do: every declared node exists and is configured"]


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
