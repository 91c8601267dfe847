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


@dataclass(frozen=True)
class LabCluster:
    name: str
    bootstrapped: bool
    bootstraps: int
    api_up: bool
    quorum_lost: bool
    etcd_members: list[tuple[str, str, bool]]  # (node, member id, healthy)


def installed_version(config: str) -> str | None:
    """The Talos version a machine config installs: the tag of machine.install.image."""
    for doc in yaml.safe_load_all(config):
        if isinstance(doc, dict) and doc.get("version") == "v1alpha1":
            image = (doc.get("machine") or {}).get("install", {}).get("image", "")
            match = re.search(r":(v\d+\.\d+\.\d+[^@]*)$", image)
            return match.group(1) if match else None
    return None
