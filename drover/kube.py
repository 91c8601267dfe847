"""Kubernetes access: node readiness, cordon, and drain by eviction honouring PDBs.

Backends sit behind KubeAPI: the lab's, and the real API through lightkube with the
admin kubeconfig drover writes (drover/kube_lightkube.py, imported when first opened).
`drain_node` is the policy on top: evict until the node is empty, and if a
PodDisruptionBudget keeps refusing (HTTP 429) past the timeout, uncordon the node and
fail the step without rebooting it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from drover.errors import StageTimeout
from drover.lab.clock import Clock
from drover.lab.datacenter import Datacenter
from drover.providers.lab import open_datacenter
from drover.registry import Registry
from drover.retry import poll_until
from drover.spec import ClusterSpec


class KubeAPI(ABC):
    @abstractmethod
    def set_cordoned(self, node: str, cordoned: bool) -> None:
        """Mark the node (un)schedulable; a no-op when it already is."""

    @abstractmethod
    def evict_pods(self, node: str) -> bool:
        """One round of evictions; False while a PodDisruptionBudget refuses (HTTP 429)."""

    @abstractmethod
    def cordoned(self, node: str) -> bool: ...

    def kube_bench(self, clock: Clock, timeout: float) -> list[str]:
        """kube-bench's JSON output from every node (runtime compliance evidence)."""
        raise NotImplementedError(f"{type(self).__name__} cannot run kube-bench")


KUBE_BACKENDS: Registry[KubeAPI] = Registry("Kubernetes backend", "spec.talos.api",
                                            lambda spec: spec.spec.talos.api)
open_kube = KUBE_BACKENDS.open


@KUBE_BACKENDS.register("lab")
class LabKube(KubeAPI):
    def __init__(self, spec: ClusterSpec, datacenter: Datacenter | None = None) -> None:
        self.spec = spec
        self.lab = datacenter or open_datacenter(spec)

    def set_cordoned(self, node: str, cordoned: bool) -> None:
        self.lab.set_cordoned(node, cordoned)

    def evict_pods(self, node: str) -> bool:
        return self.lab.evict_pods(node)

    def cordoned(self, node: str) -> bool:
        return self.lab.node(node).cordoned

    def kube_bench(self, clock: Clock, timeout: float) -> list[str]:
        """The lab runs no containers: kube-bench's output is emulated from its nodes."""
        from drover.compliance.runtime import emulate_kube_bench

        return [emulate_kube_bench(self.spec, self.lab.nodes())]


@KUBE_BACKENDS.register("talosctl")
def open_lightkube(spec: ClusterSpec) -> KubeAPI:
    """The real API through lightkube, imported only when a cluster uses it (0.3 s)."""
    from drover.kube_lightkube import Lightkube

    return Lightkube(spec)


def drain_node(kube: KubeAPI, node: str, clock: Clock, timeout: float,
               interval: float = 5.0) -> None:
    """Cordon, then evict until the node is empty; on timeout uncordon and raise."""
    kube.set_cordoned(node, True)

    def refused() -> Exception:
        kube.set_cordoned(node, False)
        return StageTimeout("drain", node, (
            f"a PodDisruptionBudget kept refusing evictions for {timeout:.0f}s; the node was "
            "uncordoned and nothing was rebooted"))

    poll_until(lambda: kube.evict_pods(node) or None, clock=clock, timeout=timeout,
               on_timeout=refused, interval=interval)
