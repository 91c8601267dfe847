"""Where drover keeps its state: $DROVER_HOME (default ~/.drover), private to the user."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from drover.files import write_private

if TYPE_CHECKING:
    from drover.spec import ClusterSpec


def drover_home() -> Path:
    home = Path(os.environ.get("DROVER_HOME") or Path.home() / ".drover").expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def cluster_dir(name: str) -> Path:
    """The folder holding one cluster's secrets, talosconfig and kubeconfig (mode 0700)."""
    path = drover_home() / "clusters" / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def remember_spec(spec: ClusterSpec) -> Path:
    """Keep the deployed spec, so commands that name only the cluster can reopen it."""
    return write_private(cluster_dir(spec.name) / "cluster.json",
                         spec.model_dump_json(by_alias=True, indent=2))


def remembered_spec(name: str) -> ClusterSpec | None:
    """The spec of a cluster drover deployed, or None if it knows no such cluster."""
    from drover.spec import ClusterSpec

    path = drover_home() / "clusters" / name / "cluster.json"
    if not path.exists():
        return None
    return ClusterSpec.model_validate_json(path.read_text())


def forget_cluster(name: str) -> None:
    """Remove the cluster's folder (secrets, client configs) once its nodes are gone."""
    shutil.rmtree(drover_home() / "clusters" / name, ignore_errors=True)
