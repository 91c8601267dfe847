"""The TalosAPI interface: the node OS, reached only through its API (no SSH).

Backends: the lab's emulation (drover/talos/lab.py) and talosctl (drover/talos/talosctl.py).
Disaster recovery follows Talos's documented procedure: `etcd_snapshot` while etcd has
quorum; once it is lost, `reset_etcd` on every surviving control plane (wipes EPHEMERAL, so
their etcd is Preparing), `recover_etcd` on one of them (bootstrap --recover-from), and the
others join the new etcd as members.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class SnapshotInfo:
    """What `talosctl etcd snapshot` says of the snapshot it saved (None: not reported)."""

    size: int
    hash: str | None = None
    revision: int | None = None
    total_keys: int | None = None

    def describe(self) -> str:
        return (f"{self.size} bytes, hash {self.hash or '?'}, revision "
                f"{self.revision if self.revision is not None else '?'}")


class TalosAPI(ABC):
    @abstractmethod
    def apply_config(self, node: Node, config: str, insecure: bool,
                     mode: str = "no-reboot") -> None:
        """Push a machine config: insecurely in maintenance mode, authenticated after, where
        `mode` is Talos's apply mode (no-reboot, or reboot for fields that need one)."""

    @abstractmethod
    def machine_config(self, node: Node) -> str | None:
        """The machine config the node runs (`talosctl get machineconfig`), None if none."""

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
    def etcd_snapshot(self, node: Node, path: Path) -> SnapshotInfo:
        """Save a consistent etcd snapshot, taken through control plane `node`, to `path`
        (talosctl etcd snapshot); QuorumError when etcd has no quorum to answer it."""

    @abstractmethod
    def etcd_state(self, node: Node) -> str:
        """The state of `node`'s etcd service (talosctl service etcd): Running while it holds
        etcd data, Preparing while its data is empty and it waits to bootstrap or join."""

    @abstractmethod
    def reset_etcd(self, node: Node) -> None:
        """Wipe the control plane's EPHEMERAL partition (its etcd data) and reboot it, without
        leaving etcd: `reset --graceful=false --reboot --system-labels-to-wipe=EPHEMERAL`."""

    @abstractmethod
    def recover_etcd(self, node: Node, snapshot: Path) -> None:
        """`bootstrap --recover-from=snapshot` on a control plane whose etcd is Preparing: a
        new one-member etcd from the snapshot's data; AlreadyBootstrapped if its etcd holds data.
        Not a bootstrap of a new cluster: the data, secrets and Kubernetes objects come back."""

    @abstractmethod
    def machine_status(self, node: Node) -> MachineStatus: ...

    @abstractmethod
    def cluster_health(self) -> ClusterHealth: ...


TALOS_BACKENDS: Registry[TalosAPI] = Registry("Talos backend", "spec.talos.api",
                                              lambda spec: spec.spec.talos.api)
register = TALOS_BACKENDS.register
open_talos = TALOS_BACKENDS.open
