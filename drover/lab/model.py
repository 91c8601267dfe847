"""What the lab reports: nodes and clusters as plain values, and config parsing it needs."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class LabNode:
    name: str
    cluster: str
    role: str
    pool: str
    state: str
    since: float
    address: str
    talos_version: str | None
    config_hash: str | None
    ready: bool
    etcd_member: bool
    cordoned: bool = False
    kubernetes_version: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class LabCluster:
    name: str
    bootstrapped: bool
    bootstraps: int
    api_up: bool
    quorum_lost: bool
    etcd_members: list[tuple[str, str, bool]]  # (node, member id, healthy)
    recoveries: int = 0      # etcd restored from a snapshot (not counted as bootstraps)


def version_of(image: str) -> str | None:
    """The version tag of an image reference, e.g. v1.13.9 of `.../installer:v1.13.9`."""
    match = re.search(r":(v\d+\.\d+\.\d+[^@/]*)$", image)
    return match.group(1) if match else None


def installed_versions(config: str) -> tuple[str | None, str | None]:
    """(Talos, Kubernetes) versions a machine config installs: the tags of
    machine.install.image and machine.kubelet.image."""
    for doc in yaml.safe_load_all(config):
        if isinstance(doc, dict) and doc.get("version") == "v1alpha1":
            machine = doc.get("machine") or {}
            return (version_of((machine.get("install") or {}).get("image", "")),
                    version_of((machine.get("kubelet") or {}).get("image", "")))
    return None, None


def installed_version(config: str) -> str | None:
    """The Talos version a machine config installs: the tag of machine.install.image."""
    return installed_versions(config)[0]
