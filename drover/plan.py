"""Pure planning: compare what the spec declares with what exists, decide what to do.

No I/O here: the flows observe, this module decides, the tasks act on the
difference. An empty plan means the step is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drover.spec import NodeSpec


@dataclass(frozen=True)
class ObservedNode:
    name: str
    role: str
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
    unexpected: list[str] = field(default_factory=list)   # exist but are not declared

    @property
    def empty(self) -> bool:
        return not (self.create or self.configure or self.bootstrap)

    def describe(self, cluster: str) -> list[str]:
        lines = [f"{cluster}: create {n.name} ({n.role})" for n in self.create]
        lines += [f"{cluster}: push machine config to {n.name}" for n in self.configure]
        if self.bootstrap:
            lines.append(f"{cluster}: bootstrap etcd on the first control plane")
        lines += [f"{cluster}: leave {name} alone: it exists but is not declared"
                  for name in self.unexpected]
        return lines or [f"{cluster}: nothing to do: every declared node exists and is configured"]


def plan_deploy(declared: list[NodeSpec], observed: Observed) -> DeployPlan:
    """What a deploy must do so that every declared node exists, is configured and joined."""
    names = {n.name for n in declared}
    create = [n for n in declared if n.name not in observed.nodes]
    configure = [n for n in declared
                 if n.name not in observed.nodes or not observed.nodes[n.name].configured]
    return DeployPlan(
        create=create,
        configure=configure,
        bootstrap=not observed.bootstrapped,
        fresh=observed.empty,
        unexpected=sorted(set(observed.nodes) - names),
    )
