"""The lab's Talos API: the same rules as Talos, answered from the emulated datacenter."""

from __future__ import annotations

import os
from pathlib import Path

from drover.errors import NodeNotFound
from drover.lab.datacenter import Datacenter
from drover.lab.etcd import read_snapshot
from drover.lab.model import LabNode
from drover.providers.base import Node
from drover.providers.lab import open_datacenter
from drover.spec import ClusterSpec, NodeSize, NodeSpec
from drover.talos.base import (
    ClusterHealth,
    EtcdMember,
    MachineStatus,
    SnapshotInfo,
    TalosAPI,
    register,
)


class LabTalos(TalosAPI):
    """Talos on the lab's nodes; on a real provider's machines (tiny test VMs that run no
    Talos), it emulates the OS layer on a twin per machine, made on first sight and made
    anew when the machine behind the name is another one (its uid changed)."""

    def __init__(self, spec: ClusterSpec, datacenter: Datacenter | None = None) -> None:
        self.lab = datacenter or open_datacenter(spec)

    def _twin(self, node: Node) -> LabNode:
        try:
            twin = self.lab.node(node.name)
        except NodeNotFound:
            twin = None
        if twin is not None and (not node.uid or twin.image == f"vm:{node.uid}"):
            return twin
        if not node.uid:
            raise NodeNotFound(f"{node.name}: no such node in lab cluster {self.lab.cluster!r}")
        if twin is not None:
            self.lab.delete(node.name)  # a new machine under an old name starts from scratch
        spec = NodeSpec(name=node.name, role=node.role, pool=node.pool, size=NodeSize())
        return self.lab.create(spec, f"vm:{node.uid}")

    def apply_config(self, node: Node, config: str, insecure: bool,
                     mode: str = "no-reboot") -> None:
        self._twin(node)
        self.lab.apply_config(node.name, config, insecure, mode)

    def machine_config(self, node: Node) -> str | None:
        self._twin(node)
        return self.lab.machine_config(node.name)

    def bootstrap(self, node: Node) -> None:
        self.lab.bootstrap(node.name)

    def upgrade(self, node: Node, image: str) -> None:
        self.lab.upgrade(node.name, image)

    def upgrade_kubernetes(self, version: str) -> list[str]:
        return self.lab.upgrade_kubernetes(version)

    def remove_member(self, node: Node) -> None:
        self.lab.remove_member(node.name)

    def etcd_snapshot(self, node: Node, path: Path) -> SnapshotInfo:
        payload = self.lab.snapshot_etcd(node.name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(payload)
        doc = read_snapshot(payload)
        return SnapshotInfo(len(payload), doc["hash"], doc["revision"],
                            len(doc["members"]) + len(doc["cordoned"]))

    def etcd_state(self, node: Node) -> str:
        return self.lab.etcd_state(node.name)

    def reset_etcd(self, node: Node) -> None:
        self.lab.reset_etcd(node.name)

    def recover_etcd(self, node: Node, snapshot: Path) -> None:
        self.lab.recover_etcd(node.name, Path(snapshot).read_bytes())

    def machine_status(self, node: Node) -> MachineStatus:
        n = self._twin(node)
        return MachineStatus(n.state, n.config_hash is not None, n.ready, n.talos_version,
                             n.kubernetes_version)

    def cluster_health(self) -> ClusterHealth:
        s = self.lab.status()
        return ClusterHealth(s.bootstrapped, s.api_up, s.quorum_lost,
                             [EtcdMember(node, mid, ok) for node, mid, ok in s.etcd_members])


register("lab")(LabTalos)
