"""The TalosAPI interface: the node OS, reached only through its API (no SSH).

Backends: the lab's emulation (drover/talos/lab.py) and, later, talosctl.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from drover.providers.base import Node
from drover.spec import ClusterSpec


@dataclass(frozen=True)
class MachineStatus:
    """What `talosctl get machinestatus` and the Kubernetes node say about one machine."""

    stage: str               # booting, maintenance, installing, rebooting, running, ...
    configured: bool         # has a machine config (maintenance API closed)
    ready: bool              # Kubernetes node Ready
    talos_version: str | None


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
    def machine_status(self, node: Node) -> MachineStatus: ...

    @abstractmethod
    def cluster_health(self) -> ClusterHealth: ...


TalosFactory = Callable[[ClusterSpec], TalosAPI]
TALOS_BACKENDS: dict[str, TalosFactory] = {}


def register(name: str) -> Callable[[TalosFactory], TalosFactory]:
    def add(factory: TalosFactory) -> TalosFactory:
        TALOS_BACKENDS[name] = factory
        return factory
    return add


def open_talos(spec: ClusterSpec) -> TalosAPI:
    name = spec.spec.talos.api
    try:
        return TALOS_BACKENDS[name](spec)
    except KeyError:
        raise ValueError(f"spec.talos.api: no Talos backend {name!r}; "
                         f"known: {', '.join(sorted(TALOS_BACKENDS))}") from None
