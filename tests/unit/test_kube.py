"""Contract tests of the Kubernetes backend (lightkube) against a fake API server behind
httpx.MockTransport, shaped on the Kubernetes API: nodes, pods by node, the eviction
subresource answering 429 while a PodDisruptionBudget refuses; and drain_node's policy."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from lightkube import Client, KubeConfig

from drover.errors import StageTimeout
from drover.kube import drain_node
from drover.kube_lightkube import Lightkube
from drover.lab.clock import ManualClock


class FakeKube:
    """Just enough of the API server: one node, pods on it, evictions and a PDB."""

    def __init__(self, pods: list[dict[str, Any]], pdb_refusals: int = 0) -> None:
        self.unschedulable = False
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.pdb_refusals = pdb_refusals
        self.evictions: list[str] = []
        self.patches: list[Any] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/nodes/w1" and request.method == "GET":
            return httpx.Response(200, json=self.node())
        if path == "/api/v1/nodes/w1" and request.method == "PATCH":
            body = json.loads(request.content)
            self.patches.append((request.headers["content-type"], body))
            self.unschedulable = body["spec"]["unschedulable"]
            return httpx.Response(200, json=self.node())
        if path == "/api/v1/pods" and request.method == "GET":
            assert request.url.params["fieldSelector"] == "spec.nodeName=w1"
            return httpx.Response(200, json={"apiVersion": "v1", "kind": "PodList",
                                             "metadata": {}, "items": list(self.pods.values())})
        if path.endswith("/eviction") and request.method == "POST":
            name = path.split("/")[-2]
            if self.pdb_refusals and not self.pods[name]["metadata"].get("ownerReferences"):
                self.pdb_refusals -= 1
                return httpx.Response(429, json={
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 429,
                    "reason": "TooManyRequests",
                    "message": "Cannot evict pod as it would violate the pod's disruption "
                               "budget."})
            self.evictions.append(name)
            self.pods.pop(name, None)
            return httpx.Response(201, json={"kind": "Status", "apiVersion": "v1",
                                             "status": "Success", "code": 201})
        return httpx.Response(404, json={"kind": "Status", "apiVersion": "v1", "code": 404,
                                         "status": "Failure", "message": f"{path} not found"})

    def node(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1"},
                "spec": {"unschedulable": self.unschedulable}}


def pod(name: str, namespace: str = "default", daemonset: bool = False,
        mirror: bool = False, phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if daemonset:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                    "name": "ds", "uid": "1"}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": "w1",
            "containers": [{"name": "c"}]}, "status": {"phase": phase}}


def backend(fake: FakeKube) -> Lightkube:
    config = KubeConfig.from_dict({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "admin", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "admin"}}]})
    # a plain function, not the bound method: lightkube deep-copies its transport, and a
    # copied bound method would carry a copy of the fake
    client = Client(config, transport=httpx.MockTransport(lambda request: fake.handle(request)))
    return Lightkube(spec=None, client=client)  # type: ignore[arg-type]


def test_cordon_patches_spec_unschedulable_and_reads_it_back() -> None:
    fake = FakeKube([])
    kube = backend(fake)

    kube.set_cordoned("w1", True)

    assert kube.cordoned("w1") is True
    content_type, body = fake.patches[0]
    assert content_type == "application/strategic-merge-patch+json"
    assert body == {"spec": {"unschedulable": True}}


def test_eviction_moves_ordinary_pods_and_leaves_daemonset_mirror_and_finished_ones() -> None:
    fake = FakeKube([pod("web"), pod("db", "data"), pod("proxy", daemonset=True),
                     pod("apiserver", "kube-system", mirror=True), pod("job", phase="Succeeded")])

    assert backend(fake).evict_pods("w1") is True

    assert sorted(fake.evictions) == ["db", "web"]
    assert sorted(fake.pods) == ["apiserver", "job", "proxy"]


def test_a_pdb_refusal_is_reported_as_not_drained_yet() -> None:
    fake = FakeKube([pod("web")], pdb_refusals=1)
    kube = backend(fake)

    assert kube.evict_pods("w1") is False  # 429: the budget says no for now
    assert kube.evict_pods("w1") is True   # and yes on the next round
    assert fake.evictions == ["web"]


def test_drain_retries_until_the_pdb_allows_then_leaves_the_node_cordoned() -> None:
    fake = FakeKube([pod("web")], pdb_refusals=3)
    clock = ManualClock(1000.0)

    drain_node(backend(fake), "w1", clock, timeout=60, interval=5)

    assert fake.unschedulable is True and fake.evictions == ["web"]
    assert clock.now() == 1015.0  # three refusals, one poll interval each


def test_drain_blocked_past_its_timeout_uncordons_and_fails() -> None:
    fake = FakeKube([pod("web")], pdb_refusals=10_000)
    clock = ManualClock(1000.0)

    with pytest.raises(StageTimeout, match=r"^w1: drain: a PodDisruptionBudget kept refusing"):
        drain_node(backend(fake), "w1", clock, timeout=60, interval=5)

    assert fake.unschedulable is False and fake.evictions == []
    assert clock.now() == 1060.0
