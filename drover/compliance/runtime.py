"""Runtime evidence: the kube-bench Job adjusted for Talos (no /etc/systemd, /lib/systemd or
/srv/kubernetes mounts, which a read-only root refuses; a privileged namespace, because Talos
enforces PodSecurity baseline), and on the lab an emulated kube-bench run built from the lab's
nodes: the JSON a Talos run gives, false positives included, so the whole path runs."""

from __future__ import annotations

import json
from typing import Any

from drover.compliance.catalogue import Control, load_catalogue
from drover.compliance.evaluate import evaluate_spec
from drover.compliance.result import FAIL, NOT_APPLICABLE, PASS, WAIVED, WARN
from drover.spec import ClusterSpec

IMAGE = "docker.io/aquasec/kube-bench:v0.15.6"
NAMESPACE = "drover-kube-bench"
#: kube-bench's job.yaml mounts, less the three Talos does not have (talos#4174)
MOUNTS = {"var-lib-cni": "/var/lib/cni", "var-lib-etcd": "/var/lib/etcd",
          "var-lib-kubelet": "/var/lib/kubelet", "etc-kubernetes": "/etc/kubernetes",
          "etc-cni-netd": "/etc/cni/net.d", "opt-cni-bin": "/opt/cni/bin"}
TARGETS = {"controlplane": "master,etcd,controlplane,node,policies", "worker": "node"}
PSA = {f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")}


def namespace_manifest() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": PSA}}


def job_name(node: str) -> str:
    return f"kube-bench-{node}"[:63].rstrip("-")


def job_manifest(spec: ClusterSpec, role: str, node: str) -> dict[str, Any]:
    """A kube-bench Job pinned to one node, its role's targets, JSON on stdout, no retries."""
    benchmark = spec.spec.compliance.benchmark
    pod: dict[str, Any] = {
        "hostPID": True, "restartPolicy": "Never", "nodeName": node,
        "containers": [{
            "name": "kube-bench", "image": IMAGE,
            "command": ["kube-bench", "run", "--targets", TARGETS[role], "--benchmark",
                        benchmark, "--json"],
            "volumeMounts": [{"name": n, "mountPath": p, "readOnly": True}
                             for n, p in MOUNTS.items()],
        }],
        "volumes": [{"name": n, "hostPath": {"path": p}} for n, p in MOUNTS.items()],
    }
    if role == "controlplane":
        pod["tolerations"] = [{"key": "node-role.kubernetes.io/control-plane",
                               "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(node), "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "drover"}},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600,
                     "template": {"metadata": {"labels": {"app": "kube-bench"}}, "spec": pod}}}


def _kube_bench_status(control: Control, static: str) -> str:
    """What kube-bench reports for a control on Talos, given drover's static verdict."""
    mismatch = "FAIL" if control.scored else "WARN"
    if control.decide == "not-applicable":
        return mismatch  # the file or flag kube-bench looks for does not exist on Talos
    if control.decide == "fixed":
        return mismatch if control.false_positive else "PASS"
    if control.decide == "runtime":
        return "WARN" if control.section.startswith(("3", "5")) else "PASS"
    if static == PASS:
        return mismatch if control.false_positive else "PASS"
    if static in (FAIL, WARN, WAIVED, NOT_APPLICABLE):
        return mismatch
    return "PASS"


def emulate_kube_bench(spec: ClusterSpec, nodes: list[Any]) -> str:
    """kube-bench JSON as a Talos run of every running node would print it (one block per
    node and target), judged from the spec the lab's nodes were configured from."""
    catalogue = load_catalogue(spec.spec.compliance.benchmark)
    static = {r.id: r.waived_status or r.status for r in evaluate_spec(spec).results}
    blocks = []
    groups = {"1": "master", "2": "etcd", "3": "controlplane", "4": "node", "5": "policies"}
    for node in nodes:
        if node.state != "running":
            continue
        wanted = TARGETS["controlplane" if node.role == "controlplane" else "worker"].split(",")
        detected = ".".join((node.kubernetes_version or spec.spec.kubernetes.version)
                            .lstrip("v").split(".")[:2])
        for top, node_type in groups.items():
            if node_type not in wanted:
                continue
            tests = []
            for sid, text in catalogue.sections.items():
                if sid.split(".")[0] != top:
                    continue
                results = [_result(c, _kube_bench_status(c, static[c.id]), node.name)
                           for c in catalogue.controls.values() if c.section == sid]
                tests.append({"section": sid, "type": "", "desc": text, "results": results,
                              **_counts(results, short=True)})
            counts = _counts([r for t in tests for r in t["results"]])
            blocks.append({"id": top, "version": catalogue.benchmark,
                           "detected_version": detected, "text": node_type,
                           "node_type": node_type, "tests": tests, **counts})
    totals = {k: sum(b[k] for b in blocks) for k in _counts([])}
    return json.dumps({"Controls": blocks, "Totals": totals}, indent=1)


def _result(control: Control, status: str, node: str) -> dict[str, Any]:
    return {"test_number": control.id,
            "test_desc": f"{control.title} ({'Automated' if control.scored else 'Manual'})",
            "audit": f"(emulated on lab node {node})", "AuditEnv": "", "AuditConfig": "",
            "type": "" if control.decide != "runtime" else "manual", "remediation": "",
            "test_info": [], "status": status, "actual_value": "", "scored": control.scored,
            "IsMultiple": False, "expected_result": ""}


def _counts(results: list[dict[str, Any]], short: bool = False) -> dict[str, int]:
    keys = ("pass", "fail", "warn", "info")
    counts = {k: sum(r["status"] == k.upper() for r in results) for k in keys}
    return counts if short else {f"total_{k}": v for k, v in counts.items()}
