"""Where names and paths enter drover, checked once: cluster and node names (CLI arguments,
flow parameters, events) and files drover reads on someone's behalf (a flow run's config, a
config's patch files). A name is a DNS label of bounded length, so it can never spell a path;
a path is resolved (symlinks included) and must stay inside the folder it belongs to. Every
refusal is InvalidName, naming what was given (truncated) and the rule, never a file's content.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from drover.errors import InvalidName
from drover.model import CLUSTER_NAME_MAX, NODE_NAME_MAX

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_RULE = ("lower-case letters, digits and '-', starting and ending with a letter or digit "
               "(a DNS label)")
CONFIG_ROOT_ENV = "DROVER_CONFIG_ROOT"


def shown(value: object, limit: int = 60) -> str:
    """A value as it may appear in a message: repr of text cut to `limit`, else its type."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        return repr(text[:limit] + "…") if len(text) > limit else repr(text)
    return f"a {type(value).__name__}"


def cluster_name(name: object) -> str:
    """`name` if it may name a cluster (what metadata.name allows); else InvalidName."""
    if not isinstance(name, str) or len(name) > CLUSTER_NAME_MAX or not _LABEL.fullmatch(name):
        raise InvalidName(f"cluster name {shown(name)} is not allowed: a cluster name is "
                          f"{_LABEL_RULE}, at most {CLUSTER_NAME_MAX} characters")
    return name


def node_name(cluster: object, name: object) -> str:
    """`name` if it may name a node of `cluster`: `<cluster>-<pool>-<n>`; else InvalidName."""
    prefix = f"{cluster_name(cluster)}-"
    rule = (f"a node name of cluster {cluster!r} is {prefix}<pool>-<number>, {_LABEL_RULE}, "
            f"at most {NODE_NAME_MAX} characters")
    if not isinstance(name, str) or len(name) > NODE_NAME_MAX or not _LABEL.fullmatch(name):
        raise InvalidName(f"node name {shown(name)} is not allowed: {rule}")
    pool, _, number = name.removeprefix(prefix).rpartition("-")
    if not name.startswith(prefix) or not pool or not number.isdigit():
        raise InvalidName(f"node name {shown(name)} is not allowed: {rule}")
    return name


def confined(path: str | os.PathLike[str], root: str | os.PathLike[str], what: str) -> Path:
    """`path` resolved (relative to the working directory, symlinks followed) if it lies inside
    `root`; an absolute path elsewhere, a '..' escape or a symlink leading out is InvalidName."""
    if not isinstance(path, (str, os.PathLike)) or "\0" in os.fspath(path):
        raise InvalidName(f"{what} {shown(path)} is not a usable path")
    base = Path(root).resolve()
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_relative_to(base):
        raise InvalidName(f"{what} {shown(path)} is outside {base}: a {what} must be a file "
                          f"inside that folder (no absolute path elsewhere, no '..', no symlink "
                          f"leading out)")
    return resolved


def config_root() -> Path:
    """The folder flow runs may read cluster configs from: $DROVER_CONFIG_ROOT, else
    ./configs of the working directory (a deployment's working directory is the project)."""
    return Path(os.environ.get(CONFIG_ROOT_ENV) or Path.cwd() / "configs").resolve()


def flow_config_path(path: str | os.PathLike[str]) -> Path:
    """A flow run's `config` parameter, confined to config_root(): a form in the UI or an API
    call must not make a worker read (and log) any file it can reach."""
    try:
        return confined(path, config_root(), "config")
    except InvalidName as exc:
        raise InvalidName(f"{exc}; flow runs read configs only from {config_root()} "
                          f"(set ${CONFIG_ROOT_ENV} to use another folder)") from None
