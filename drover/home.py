"""Where drover keeps its state: $DROVER_HOME (default ~/.drover), private to the user.

Every folder here is 0700 and every file 0600 (a folder or file left open to others is refused
with the chmod that fixes it). A cluster's folder, clusters/<name>, is reached only through a
checked name, so no name can point outside it. The cluster's remembered spec (cluster.json) keeps
its previous version beside it (cluster.json.prev): `remembered_spec` refuses a damaged file and
names both recoveries, `recall_spec` falls back to the previous copy and says so.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drover.boundaries import cluster_name
from drover.errors import InvalidName, StateError
from drover.files import write_private
from drover.statefile import check_private, private_dir, read_private

if TYPE_CHECKING:
    from drover.spec import ClusterSpec

SPEC_FILE = "cluster.json"
PREVIOUS_SPEC = "cluster.json.prev"


def drover_home() -> Path:
    """$DROVER_HOME (default ~/.drover), created 0700; an existing one open to others is
    refused with the chmod that fixes it."""
    return private_dir(Path(os.environ.get("DROVER_HOME") or Path.home() / ".drover")
                       .expanduser())


def _cluster_path(name: str) -> Path:
    """clusters/<name> under drover_home(), for a checked name that stays inside it."""
    clusters = private_dir(drover_home() / "clusters")
    path = clusters / cluster_name(name)
    if path.is_symlink() or path.resolve().parent != clusters.resolve():
        raise InvalidName(f"{path}: a cluster folder must be a plain folder inside {clusters}")
    check_private(path)  # if it exists: 0700, or refused with the chmod that fixes it
    return path


def cluster_dir(name: str) -> Path:
    """The folder holding one cluster's secrets, talosconfig and kubeconfig (mode 0700)."""
    return private_dir(_cluster_path(name))


def remember_spec(spec: ClusterSpec) -> Path:
    """Keep the deployed spec, so commands that name only the cluster can reopen it; the
    version it replaces (if it was readable and different) becomes cluster.json.prev."""
    folder = cluster_dir(spec.name)
    text = spec.model_dump_json(by_alias=True, indent=2)
    path = folder / SPEC_FILE
    try:
        old = read_private(path, "remembered spec")
        _parse_spec(path, old)
    except (FileNotFoundError, StateError):
        old = None  # nothing worth keeping: a damaged file must not push out a good copy
    if old is not None and old != text:
        write_private(folder / PREVIOUS_SPEC, old)
    return write_private(path, text)


def remembered_spec(name: str) -> ClusterSpec | None:
    """The spec of a cluster drover deployed, or None if it knows no such cluster; a damaged
    cluster.json raises StateError naming the file and how to recover it."""
    folder = _cluster_path(name)
    path = folder / SPEC_FILE
    try:
        return _parse_spec(path, read_private(path, "remembered spec"))
    except FileNotFoundError:
        return None
    except StateError as exc:
        raise StateError(f"{exc}; {_recoveries(folder)}") from None


@dataclass(frozen=True)
class RecalledSpec:
    """What `recall_spec` found: the spec (None: no such cluster) and, when it fell back to
    the previous copy, a warning the caller prints."""

    spec: ClusterSpec | None
    warning: str | None = None


def recall_spec(name: str) -> RecalledSpec:
    """Like `remembered_spec`, but a damaged or missing cluster.json falls back to the previous
    copy with a warning: for commands that must still work on a cluster whose file broke
    (destroy, status). Raises StateError only when no readable copy is left."""
    folder = _cluster_path(name)
    try:
        spec = remembered_spec(name)
    except StateError as exc:
        damage = str(exc)
    else:
        if spec is not None or not (folder / PREVIOUS_SPEC).exists():
            return RecalledSpec(spec)
        damage = f"{folder / SPEC_FILE}: missing"
    previous = folder / PREVIOUS_SPEC
    try:
        spec = _parse_spec(previous, read_private(previous, "remembered spec"))
    except (FileNotFoundError, StateError):
        raise StateError(damage) from None
    return RecalledSpec(spec, f"{folder / SPEC_FILE} is damaged or missing: using the previous "
                              f"copy {previous}, which may predate the last apply; run `drover "
                              "apply CONFIG` to rewrite it")


def _parse_spec(path: Path, text: str) -> ClusterSpec:
    """Parse a remembered spec; the error names the fields, never the file's content."""
    from pydantic import ValidationError

    from drover.spec import ClusterSpec

    try:
        return ClusterSpec.model_validate_json(text)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
                    for e in exc.errors(include_input=False, include_url=False)][:3]
        raise StateError(f"{path}: damaged ({'; '.join(problems)})") from None


def _recoveries(folder: Path) -> str:
    previous = folder / PREVIOUS_SPEC
    keep = (f"copy the previous version back (`cp {previous} {folder / SPEC_FILE}`), or "
            if previous.exists() else "")
    return (f"to recover, {keep}run `drover apply CONFIG` with the cluster's config to rewrite "
            f"it (or, to destroy it, `drover destroy {folder.name} --config CONFIG`)")


def known_clusters() -> list[str]:
    """The clusters drover remembers (a cluster.json, or its previous copy), sorted."""
    clusters = drover_home() / "clusters"
    if not clusters.is_dir():
        return []
    return sorted(path.name for path in clusters.iterdir() if path.is_dir()
                  and ((path / SPEC_FILE).exists() or (path / PREVIOUS_SPEC).exists()))


def forget_cluster(name: str) -> None:
    """Remove the cluster's folder (secrets, client configs) once its nodes are gone; only ever
    drover_home()/clusters/<name> for a checked name."""
    path = _cluster_path(name)
    if path.exists():
        shutil.rmtree(path)
