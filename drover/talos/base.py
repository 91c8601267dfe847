"""The TalosAPI interface: the node OS, reached only through its API (no SSH).

Backends: the lab's emulation (drover/talos/lab.py) and, later, talosctl.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from drover.providers.base import Node
from drover.registry import Registry


@dataclass(frozen=True)
class MachineStatus:
    """What `talosctl get machinestatus` and the Kubernetes node say about one machine."""

    stage: str               # booting, maintenance, installing, rebooting, running, ...
    configured: bool         # has a machine config (maintenance API closed)
    ready: bool              # Kubernetes node Ready
    talos_version: str | None
    kubernetes_version: str | None = None


@dataclass(frozen=True)
class EtcdMember:
    node: str
    member_id: str
    healthy: bool


@dataclass(frozen=True)
class ClusterHealth:
    bootstrapped: bool
    api_up: bool
    quorum_lost: bool
    members: list[EtcdMember]

    def healthy_members(self) -> int:
        return sum(1 for m in self.members if m.healthy)


class TalosAPI(ABC):
    @abstractmethod
    def apply_config(self, node: Node, config: str, insecure: bool) -> None:
        """Push a machine config: insecurely in maintenance mode, authenticated after."""

    @abstractmethod
    def bootstrap(self, node: Node) -> None:
        """Bootstrap etcd on one control plane; AlreadyBootstrapped if done before."""

    @abstractmethod
    def upgrade(self, node: Node, image: str) -> None:
        """Install `image` and reboot into it, keeping data; QuorumError if etcd is not healthy."""

    @abstractmethod
    def upgrade_kubernetes(self, version: str) -> list[str]:
        """upgrade-k8s: control-plane components, then kubelets; returns the nodes done."""

    @abstractmethod
    def remove_member(self, node: Node) -> None:
        """Remove `node`'s etcd member through a healthy control plane (etcd remove-member)."""

    @abstractmethod
    def machine_status(self, node: Node) -> MachineStatus: ...

    @abstractmethod
    def cluster_health(self) -> ClusterHealth: ...


TALOS_BACKENDS: Registry[TalosAPI] = Registry("Talos backend", "spec.talos.api",
                                              lambda spec: spec.spec.talos.api)
register = TALOS_BACKENDS.register
open_talos = TALOS_BACKENDS.open
