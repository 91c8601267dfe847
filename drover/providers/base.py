"""The Provider interface (where VMs come from) and the registry of backends.

Small and idempotent: create returns an existing node of that name rather
than a duplicate, delete succeeds when the node is already gone. Flows never
branch on which backend they drive.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from drover.lab.clock import Clock
from drover.registry import Registry
from drover.spec import NodeSpec


@dataclass(frozen=True)
class Node:
    """A machine as the infrastructure sees it."""

    name: str
    cluster: str
    role: str
    pool: str
    state: str          # the provider's view: for the lab, the Talos lifecycle stage
    address: str
    uid: str = ""       # the infrastructure's id of this machine (a libvirt domain UUID)


class Provider(ABC):
    """One cluster's infrastructure backend."""

    kind: str
    clock: Clock

    @abstractmethod
    def prepare_image(self, image: str) -> str:
        """Make the boot image usable by the infrastructure (cached); return its handle."""

    @abstractmethod
    def create_node(self, node: NodeSpec, image: str) -> Node:
        """Create and start a node; an existing node of that name is returned as it is."""

    @abstractmethod
    def get_node(self, name: str) -> Node:
        """The node, or NodeNotFound."""

    @abstractmethod
    def list_nodes(self) -> list[Node]:
        """Every node of this cluster that exists, sorted by name."""

    @abstractmethod
    def delete_node(self, name: str) -> None:
        """Delete the node; succeeds if it is already gone."""

    def delete_nodes(self, names: list[str]) -> None:
        """Delete the nodes, one after another; a backend whose deletes are independent
        calls may run them at once."""
        for name in names:
            self.delete_node(name)

    def preflight(self, nodes: list[NodeSpec], image: str) -> list[str]:
        """What would stop creating `nodes` from `image`, found before anything is created
        (address pools, quotas, names, the image): one line per shortfall, naming it and by
        how much. The default knows of none; backends check what their infrastructure tells."""
        return []

    def timing_scale(self) -> tuple[float, str]:
        """How to read durations measured on this provider's clock: (scale factor, note)."""
        return 1.0, ""

    def next_change_at(self, node: str | None = None) -> float | None:
        """When something is next due to change (with `node`: something that can change what
        that node reports); None when the backend cannot know."""
        return None


PROVIDERS: Registry[Provider] = Registry("provider", "spec.provider.kind",
                                        lambda spec: spec.spec.provider.kind)
register = PROVIDERS.register
open_provider = PROVIDERS.open
