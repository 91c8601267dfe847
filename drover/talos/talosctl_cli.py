"""Running talosctl and reading what it prints: the executable, one call under a deadline
in its own process group, failures sorted (transient, TLS, quorum), stderr scrubbed of
secrets, and the parsers for its JSON streams and text tables."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from drover.errors import (
    AlreadyBootstrapped,
    DroverError,
    QuorumError,
    StageTimeout,
    TalosError,
    TransientError,
)
from drover.spec import ClusterSpec
from drover.talos.base import MachineStatus, SnapshotInfo

log = logging.getLogger("drover.talos.talosctl")

T = TypeVar("T")

INSTALL_HINT = ("install the talosctl matching the cluster's Talos version {version} "
                "(`curl -sL https://talos.dev/install | sh`, or a release binary from "
                "https://github.com/siderolabs/talos/releases)")
UNREACHABLE = MachineStatus("unreachable", configured=False, ready=False, talos_version=None)


class TalosctlNotFound(DroverError, FileNotFoundError):
    """No talosctl to run: none on PATH, or spec.talos.talosctl names no executable."""


class CertificateMismatch(TalosError):
    """The node's TLS did not fit the call: it is in maintenance mode, or not this cluster's."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds one talosctl call may run before it and its children are killed."""

    read: float = 30.0                 # get, version, etcd members
    change: float = 120.0              # apply-config, bootstrap, etcd remove-member/leave
    health_wait: float = 10.0          # health --wait-timeout: a probe, not a wait
    upgrade: float = 1800.0            # upgrade --wait (talosctl's own default is 30m)
    reboot: float = 900.0
    upgrade_kubernetes: float = 1800.0
    reset: float = 600.0
    snapshot: float = 600.0            # etcd snapshot: the whole database over the API


@dataclass(frozen=True)
class EtcdMemberRow:
    """One line of `talosctl etcd members`."""

    member_id: str
    hostname: str                      # may be briefly empty after a reboot (talos#13797)
    peer_urls: tuple[str, ...]
    learner: bool

    def peer_hosts(self) -> list[str]:
        return [u.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]") for u in self.peer_urls]


@dataclass(frozen=True)
class ClusterMember:
    """One `talosctl get members` resource: a machine the cluster discovery knows."""

    hostname: str
    addresses: tuple[str, ...]
    machine_type: str


# ---- reading talosctl's output and errors (pure) --------------------------------------------

_TRANSIENT = ("code = unavailable", "deadlineexceeded", "deadline exceeded",
              "connection refused", "i/o timeout", "connection reset by peer", "no route to host")
# TLS failures arrive as `code = Unavailable` too, but no retry fixes them: looked at first.
_TLS = ("x509:", "tls:", "authentication handshake failed", "certificate required")
_QUORUM = ("all members must be healthy", "unhealthy cluster")
_PEM = re.compile(r"-----BEGIN [^-]+-----.*?(?:-----END [^-]+-----|\Z)", re.S)
_FIELD = re.compile(r"(?i)\b(key|crt|cert|ca|token|secret|password|authorization)"
                    r"(\"?\s*[:=]\s*\"?)([^\s\"',}]+)")
_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")  # Kubernetes/Talos bootstrap tokens
_BLOB = re.compile(r"[A-Za-z0-9+/_-]{40,}={0,2}")
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def classify(stderr: str) -> str:
    """What a failed call's stderr says: already-exists, tls, quorum, transient or error."""
    text = stderr.lower()
    if "code = alreadyexists" in text:
        return "already-exists"
    for kind, markers in (("tls", _TLS), ("quorum", _QUORUM), ("transient", _TRANSIENT)):
        if any(marker in text for marker in markers):
            return kind
    return "error"


def _blob(match: re.Match[str]) -> str:
    # base64 of a key or certificate mixes cases and digits; paths and hex digests do not
    s = match[0]
    secret = any(c.isupper() for c in s) and any(c.islower() for c in s) \
        and any(c.isdigit() for c in s)
    return "[redacted]" if secret else s


def scrub(text: str) -> str:
    """`text` without PEM blocks, key/token fields, bootstrap tokens and base64 blobs."""
    text = _PEM.sub("[redacted PEM block]", text)
    text = _FIELD.sub(lambda m: f"{m[1]}{m[2]}[redacted]", text)
    text = _TOKEN.sub("[redacted token]", text)
    return _BLOB.sub(_blob, text)


def parse_json_stream(text: str) -> list[dict[str, Any]]:
    """The objects of `talosctl get -o json`: one indented object per resource, concatenated."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return docs
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise TalosError(f"talosctl printed something other than JSON objects: {exc}") \
                from None
        docs.append(doc)


def parse_etcd_members(text: str) -> list[EtcdMemberRow]:
    """Rows of `etcd members` (NODE ID HOSTNAME PEER URLS CLIENT URLS LEARNER), one per ID."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header, rows = lines[0], {}
    has_node, has_learner = header[0] == "NODE", header[-1] == "LEARNER"
    for tokens in lines[1:]:
        rest = tokens[1:] if has_node else tokens
        if not rest:
            continue
        urls = [t for t in rest if "://" in t]
        hostname = rest[1] if len(rest) > 1 and "://" not in rest[1] else ""
        learner = has_learner and rest[-1].lower() == "true"
        member_id = normalize_member_id(rest[0])
        peers = tuple(urls[0].split(",")) if urls else ()
        rows.setdefault(member_id, EtcdMemberRow(member_id, hostname, peers, learner))
    return list(rows.values())


def normalize_member_id(member_id: str) -> str:
    """Member IDs as Talos prints them (16 hex digits); older talosctl dropped leading zeros."""
    try:
        return f"{int(member_id, 16):016x}"
    except ValueError:
        raise TalosError(f"{member_id!r} is not an etcd member ID") from None


_SNAPSHOT_INFO = re.compile(r"hash\s+(\w+),\s*revision\s+(\d+),\s*total keys\s+(\d+)")


def parse_snapshot_info(text: str, size: int) -> SnapshotInfo:
    """What `etcd snapshot` printed: `snapshot info: hash c25fd181, revision 4193, total keys
    1287, total size 3035136` (older talosctl print less: then only the file's size is known)."""
    match = _SNAPSHOT_INFO.search(text)
    if match is None:
        return SnapshotInfo(size)
    return SnapshotInfo(size, match[1], int(match[2]), int(match[3]))


def parse_service_state(text: str) -> str:
    """The STATE of `talosctl service <id>` (NODE/ID/STATE/HEALTH/EVENTS lines)."""
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "STATE" and value.strip():
            return value.strip()
    raise TalosError("talosctl service printed no STATE line")


def server_version(text: str) -> str | None:
    """The server's Tag in `talosctl version` output (only the client part is ever short)."""
    _, _, server = text.partition("Server:")
    match = re.search(r"Tag:\s*(\S+)", server)
    return match[1] if match else None


def version_tuple(version: str) -> tuple[int, int, int]:
    match = _VERSION.search(version)
    if not match:
        raise TalosError(f"{version!r} is not a Talos version like v1.13.9")
    return int(match[1]), int(match[2]), int(match[3])


def image_tag(image: str) -> str | None:
    """`v1.13.9` of `factory.talos.dev/metal-installer/<id>:v1.13.9[@sha256:...]`."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[1] if ":" in name else None


def upgrade_steps(current: str, image: str) -> list[tuple[list[str], list[str]]]:
    """The talosctl calls (subcommand, flags) that upgrade a node running `current`.

    Before v1.8 an upgrade wiped EPHEMERAL unless told `--preserve`; from v1.8 it always keeps
    data. From v1.13 the upgrade API only installs (talosctl then drains and reboots on its
    own), so drover, which drained already honouring PodDisruptionBudgets, installs with
    `--drain=false --no-reboot` and reboots as a step of its own, with its own deadline.
    """
    flags = ["--image", image, "--wait"]
    version = version_tuple(current)
    if version < (1, 8, 0):
        return [(["upgrade"], [*flags, "--preserve"])]
    if version < (1, 13, 0):
        return [(["upgrade"], flags)]
    return [(["upgrade"], [*flags, "--drain=false", "--no-reboot"]), (["reboot"], ["--wait"])]


def find_talosctl(spec: ClusterSpec) -> str:
    """spec.talos.talosctl if set, else talosctl on PATH; TalosctlNotFound says how to fix it."""
    hint = INSTALL_HINT.format(version=spec.spec.talos.version)
    configured = spec.spec.talos.talosctl
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise TalosctlNotFound(f"spec.talos.talosctl: {configured!r} is not an executable file; "
                               f"{hint} and point spec.talos.talosctl at it, or remove the "
                               "setting to use the talosctl on PATH")
    found = shutil.which("talosctl")
    if found is None:
        raise TalosctlNotFound(f"talosctl not found on PATH (needed by spec.talos.api: "
                               f"talosctl); {hint}, or set spec.talos.talosctl to its path")
    return found


# ---- running talosctl -----------------------------------------------------------------------

def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group: talosctl and anything it started
    try:
        proc.communicate(timeout=5)  # reap it, so no zombie is left either
    except subprocess.TimeoutExpired:  # a descendant left the group and holds our pipes
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
        proc.wait()


def execute(argv: list[str], timeout: float, where: str, command: str) -> tuple[int, str, str]:
    """Run argv in a new process group; (exit code, stdout, stderr), or StageTimeout.

    Not subprocess.run(timeout=): that kills only the child, then waits for pipes that a
    grandchild may still hold open.
    """
    env = {k: v for k, v in os.environ.items() if k != "TALOSCONFIG"}  # the flag decides
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
                                errors="replace", start_new_session=True)
    except OSError as exc:
        raise TalosctlNotFound(f"{argv[0]}: cannot run talosctl: {exc.strerror}") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise StageTimeout(command, where, f"no answer within {timeout:g}s; killed talosctl "
                                           f"(pid {proc.pid}) and its process group") from None
    except BaseException:
        _kill_group(proc)
        raise
    return proc.returncode, out, err


def _failure(where: str, command: str, code: int, stderr: str) -> DroverError:
    lines = [line.strip() for line in scrub(stderr).splitlines() if line.strip()]
    detail = " | ".join(lines[-12:])[-2000:] or f"exit status {code}"
    kind = classify(stderr)
    error = {"already-exists": AlreadyBootstrapped, "tls": CertificateMismatch,
             "quorum": QuorumError, "transient": TransientError}.get(kind, TalosError)
    return error(f"{where}: {command}: {detail}")


@contextlib.contextmanager
def private_file(text: str, folder: Path) -> Iterator[Path]:
    """`text` in a file only the owner can read, removed afterwards (machine configs hold keys)."""
    fd, name = tempfile.mkstemp(prefix=".machineconfig-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


