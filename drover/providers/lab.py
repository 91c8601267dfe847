"""The lab provider: nodes in drover's emulated datacenter ($DROVER_HOME/lab.db)."""

from __future__ import annotations

import math

from drover.home import drover_home
from drover.lab.clock import Clock
from drover.lab.datacenter import Datacenter, LabNode
from drover.providers.base import Node, Provider, register
from drover.spec import ClusterSpec, NodeSpec


def _node(n: LabNode) -> Node:
    return Node(n.name, n.cluster, n.role, n.pool, n.state, n.address)


def open_datacenter(spec: ClusterSpec, clock: Clock | None = None) -> Datacenter:
    return Datacenter(spec, drover_home() / "lab.db", clock)


class LabProvider(Provider):
    kind = "lab"

    def __init__(self, spec: ClusterSpec, datacenter: Datacenter | None = None) -> None:
        self.lab = datacenter or open_datacenter(spec)
        self.clock = self.lab.clock

    def prepare_image(self, image: str) -> str:
        self.lab.record_image(image)
        return image

    def create_node(self, node: NodeSpec, image: str) -> Node:
        return _node(self.lab.create(node, image))

    def get_node(self, name: str) -> Node:
        return _node(self.lab.node(name))

    def list_nodes(self) -> list[Node]:
        return [_node(n) for n in self.lab.nodes()]

    def delete_node(self, name: str) -> None:
        self.lab.delete(name)

    def preflight(self, nodes: list[NodeSpec], image: str) -> list[str]:
        return self.lab.shortfalls([n.name for n in nodes])

    def timing_scale(self) -> tuple[float, str]:
        profile = self.lab.profile
        clock = "wall-clock time" if self.clock.real else "virtual time (no real waiting)"
        if profile.compression > 1:
            return profile.compression, (f"lab, {profile.name} profile compressed "
                                         f"{profile.compression:g}x, {clock}; durations scaled "
                                         "back up")
        return 1.0, f"lab, {profile.name} profile, {clock}"

    def next_change_at(self, node: str | None = None) -> float | None:
        due = self.lab.next_change_at(node)
        return math.inf if due is None else due


register("lab")(LabProvider)
