"""The Kubernetes backend for real clusters: the cluster's API server through lightkube, with
the admin kubeconfig drover writes. Cordon, eviction honouring PodDisruptionBudgets (HTTP
429: not now), and kube-bench as one Job per node. Imported only when a cluster uses it."""

from __future__ import annotations

import httpx
from lightkube import ApiError, Client, KubeConfig, codecs
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Node as K8sNode
from lightkube.resources.core_v1 import Pod
from lightkube.types import CascadeType

from drover.errors import DroverError, StageTimeout
from drover.home import cluster_dir
from drover.kube import KubeAPI
from drover.lab.clock import Clock
from drover.retry import poll_until
from drover.spec import ClusterSpec


class Lightkube(KubeAPI):
    """The cluster's own API server, reached with $DROVER_HOME/clusters/<name>/kubeconfig."""

    def __init__(self, spec: ClusterSpec, client: Client | None = None) -> None:
        self.spec = spec
        self._client = client

    @property
    def client(self) -> Client:
        """Opened on first use: a task that never touches Kubernetes needs no kubeconfig."""
        if self._client is None:
            path = cluster_dir(self.spec.name) / "kubeconfig"
            if not path.exists():
                raise DroverError(f"{self.spec.name}: no kubeconfig at {path}; deploy the "
                                  "cluster first (drover writes it with the secrets)")
            self._client = Client(KubeConfig.from_file(str(path)),
                                  timeout=httpx.Timeout(30.0), field_manager="drover")
        return self._client

    def set_cordoned(self, node: str, cordoned: bool) -> None:
        self.client.patch(K8sNode, node, {"spec": {"unschedulable": cordoned}})

    def cordoned(self, node: str) -> bool:
        return bool(self.client.get(K8sNode, node).spec.unschedulable)

    def evict_pods(self, node: str) -> bool:
        """Ask to evict every pod on the node that a drain moves (not DaemonSet or mirror
        pods); True once none is left, False while a PodDisruptionBudget says no."""
        refused = False
        for pod in self.client.list(Pod, namespace="*", fields={"spec.nodeName": node}):
            if not _movable(pod):
                continue
            meta = pod.metadata
            eviction = Pod.Eviction(metadata=ObjectMeta(name=meta.name, namespace=meta.namespace))
            try:
                self.client.create(eviction, name=meta.name, namespace=meta.namespace)
            except ApiError as exc:
                if exc.status.code == 429:  # a PodDisruptionBudget refuses for now
                    refused = True
                elif exc.status.code != 404:  # 404: it went away by itself
                    raise
        return not refused and not any(
            _movable(p) for p in self.client.list(Pod, namespace="*",
                                                  fields={"spec.nodeName": node}))


    def kube_bench(self, clock: Clock, timeout: float) -> list[str]:
        """One kube-bench Job per node (Talos-adjusted mounts, privileged namespace); each
        waited for, its pod's log (kube-bench's JSON) read, then the Job deleted."""
        from drover.compliance.runtime import job_manifest, namespace_manifest

        try:
            self.client.create(codecs.from_dict(namespace_manifest()))
        except ApiError as exc:
            if exc.status.code != 409:  # 409: it exists from an earlier run
                raise
        outputs = []
        for node in self.client.list(K8sNode):
            labels = node.metadata.labels or {}
            role = ("controlplane" if "node-role.kubernetes.io/control-plane" in labels
                    else "worker")
            outputs.append(self._run_job(job_manifest(self.spec, role, node.metadata.name),
                                         clock, timeout))
        return outputs

    def _run_job(self, manifest: dict, clock: Clock, timeout: float) -> str:  # type: ignore[type-arg]
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        if _exists(self.client, name, namespace):  # a Job left by an interrupted run
            self.client.delete(Job, name, namespace=namespace, cascade=CascadeType.BACKGROUND)
        self.client.create(codecs.from_dict(manifest))

        def finished() -> bool | None:
            status = self.client.get(Job, name, namespace=namespace).status
            if status and status.failed:
                raise DroverError(f"{self.spec.name}: kube-bench Job {namespace}/{name} failed; "
                                  f"see `kubectl -n {namespace} logs job/{name}`")
            return True if status and status.succeeded else None

        poll_until(finished, clock=clock, timeout=timeout, on_timeout=lambda: StageTimeout(
            "kube-bench", name, f"the Job did not finish in {timeout:.0f}s"))
        pod = next(iter(self.client.list(Pod, namespace=namespace,
                                         labels={"job-name": name})))
        text = "".join(self.client.log(pod.metadata.name, namespace=namespace))
        self.client.delete(Job, name, namespace=namespace, cascade=CascadeType.BACKGROUND)
        return text


def _exists(client: Client, name: str, namespace: str) -> bool:
    try:
        client.get(Job, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise
    return True


def _movable(pod: Pod) -> bool:
    meta = pod.metadata
    if (meta.annotations or {}).get("kubernetes.io/config.mirror"):
        return False  # a static pod: the kubelet runs it, eviction cannot move it
    if any(ref.kind == "DaemonSet" for ref in meta.ownerReferences or []):
        return False
    return (pod.status.phase if pod.status else None) not in ("Succeeded", "Failed")
