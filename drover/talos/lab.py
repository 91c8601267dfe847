"""The lab's Talos API: the same rules as Talos, answered from the emulated datacenter."""

from __future__ import annotations

from drover.lab.datacenter import Datacenter
from drover.providers.base import Node
from drover.providers.lab import open_datacenter
from drover.spec import ClusterSpec
from drover.talos.base import ClusterHealth, EtcdMember, MachineStatus, TalosAPI, register


class LabTalos(TalosAPI):
    def __init__(self, spec: ClusterSpec, datacenter: Datacenter | None = None) -> None:
        self.lab = datacenter or open_datacenter(spec)

    def apply_config(self, node: Node, config: str, insecure: bool) -> None:
        self.lab.apply_config(node.name, config, insecure)

    def bootstrap(self, node: Node) -> None:
        self.lab.bootstrap(node.name)

    def upgrade(self, node: Node, image: str) -> None:
        self.lab.upgrade(node.name, image)

    def upgrade_kubernetes(self, version: str) -> list[str]:
        return self.lab.upgrade_kubernetes(version)

    def remove_member(self, node: Node) -> None:
        self.lab.remove_member(node.name)

    def machine_status(self, node: Node) -> MachineStatus:
        n = self.lab.node(node.name)
        return MachineStatus(n.state, n.config_hash is not None, n.ready, n.talos_version,
                             n.kubernetes_version)

    def cluster_health(self) -> ClusterHealth:
        s = self.lab.status()
        return ClusterHealth(s.bootstrapped, s.api_up, s.quorum_lost,
                             [EtcdMember(node, mid, ok) for node, mid, ok in s.etcd_members])


register("lab")(LabTalos)
