"""SSH identity: which keys drover offers (a key given, key file, a Secret block resolved
through drover.secretstore, else the agent), how a host's key is checked against known_hosts
(never accepted when unknown or changed), and the SSH error tree.

    DroverError
    └── SshError                          an SSH operation on a host failed
        ├── HostKeyError                  the host key could not be verified; nothing sent
        │   ├── UnknownHostKey            not in known_hosts: its fingerprint, and the fix
        │   └── HostKeyChanged            differs from known_hosts: possible MITM
        ├── SshAuthFailed                 no usable private key, or the host refused it
        ├── CommandFailed                 a non-zero exit: the command and its stderr tail
        ├── CommandTimeout (TimeoutError) a command ran out of time and was killed
        ├── UploadFailed                  an upload could not be written or verified
        └── SshUnavailable (TransientError)  refused, reset, timed out; connect retries it
"""

from __future__ import annotations

import io
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from drover import secretstore
from drover.errors import DroverError, TransientError
from drover.provider_settings import SshTarget
from drover.secretstore import SecretUnavailable

log = logging.getLogger("drover.ssh")

_TAIL = 2000          # characters of stderr an error message keeps


class SshError(DroverError):
    """An SSH operation on a host failed."""


class HostKeyError(SshError):
    """The host key could not be verified against known_hosts; nothing was sent to the host."""


class UnknownHostKey(HostKeyError):
    """The host key is not in known_hosts; the message names its fingerprint and the fix."""

    def __init__(self, target: SshTarget, key: paramiko.PKey, known_hosts: Path) -> None:
        self.fingerprint = key.fingerprint
        super().__init__(
            f"{_label(target)}: host key {key.get_name()} {key.fingerprint} is not in "
            f"{known_hosts}, so it is refused. Check this fingerprint out of band (on the host: "
            f"ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then trust it with: "
            f"ssh-keyscan -p {target.port} {target.host} >> {shlex.quote(str(known_hosts))}")


class HostKeyChanged(HostKeyError):
    """The host offered a key other than the one in known_hosts: possibly a MITM."""

    def __init__(self, target: SshTarget, got: paramiko.PKey, expected: paramiko.PKey,
                 known_hosts: Path) -> None:
        self.fingerprint, self.expected_fingerprint = got.fingerprint, expected.fingerprint
        super().__init__(
            f"{_label(target)}: HOST KEY CHANGED, possible man-in-the-middle attack: the host "
            f"offered {got.get_name()} {got.fingerprint}, {known_hosts} expects "
            f"{expected.get_name()} {expected.fingerprint}. If the host was reinstalled, check "
            f"the new fingerprint out of band and replace its line in {known_hosts}.")


class SshAuthFailed(SshError):
    """No usable private key (missing, encrypted, unreadable), or the host refused it."""


class CommandFailed(SshError):
    """A command exited non-zero; carries the command, its exit status and stderr."""

    def __init__(self, label: str, command: Sequence[str], exit_status: int,
                 stderr: str) -> None:
        self.command, self.exit_status, self.stderr = list(command), exit_status, stderr
        how = "was killed (no exit status)" if exit_status < 0 else f"exited {exit_status}"
        super().__init__(f"{label}: `{shlex.join(command)}` {how}: {stderr[-_TAIL:].strip()}")


class CommandTimeout(SshError, TimeoutError):
    """A command ran out of time; it was killed on the host and its channel closed."""

    def __init__(self, label: str, command: Sequence[str], timeout: float, stdout: str,
                 stderr: str) -> None:
        self.command, self.stdout, self.stderr = list(command), stdout, stderr
        super().__init__(f"{label}: `{shlex.join(command)}` timed out after {timeout:g}s: "
                         f"{stderr[-_TAIL:].strip()}")


class UploadFailed(SshError):
    """An upload could not be written, or the host's copy does not match the local file."""


class SshUnavailable(SshError, TransientError):
    """The host could not be reached or the connection dropped (refused, reset, timed out)."""


@dataclass(frozen=True)
class CommandResult:
    command: list[str]
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Upload:
    remote: str
    sha256: str
    skipped: bool         # the host already had this exact file
    transferred: int      # bytes sent this time
    resumed_from: int     # bytes of an earlier `<remote>.part` that were kept


def _label(target: SshTarget) -> str:
    return f"{target.host}:{target.port}"


def _host_key_name(target: SshTarget) -> str:
    """How known_hosts names the host (OpenSSH's format, as ssh-keyscan writes it)."""
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


def _known_hosts(target: SshTarget) -> tuple[Path, paramiko.HostKeys]:
    """The known_hosts file and its keys; a missing file knows no host (every key unknown)."""
    path, known = Path(target.known_hosts).expanduser(), paramiko.HostKeys()
    try:
        if path.exists():
            known.load(str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise SshError(f"{_label(target)}: cannot read known_hosts {path}: {exc}") from exc
    return path, known


class _RejectUnknown(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising an error that says which key and how to trust it."""

    def __init__(self, target: SshTarget, known_hosts: Path) -> None:
        self.target, self.known_hosts = target, known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise UnknownHostKey(self.target, key, self.known_hosts)


_KEY_TYPES = ((rsa.RSAPrivateKey, paramiko.RSAKey), (ed25519.Ed25519PrivateKey,
              paramiko.Ed25519Key), (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey))


def _private_key(target: SshTarget, private_key: str | None) -> paramiko.PKey | None:
    """The key to offer, or None for the SSH agent. Messages never quote key material."""
    label = _label(target)
    if private_key is not None:
        text = private_key
        source = (f"secret block {target.key_secret_block!r}" if target.key_secret_block
                  else "the private key given")
    elif target.key_file:
        path = Path(target.key_file).expanduser()
        source = f"key file {path}"
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise SshAuthFailed(f"{label}: cannot read {source}: {reason}") from None
    elif target.key_secret_block:
        source = f"secret block {target.key_secret_block!r}"
        try:
            text = secretstore.resolve(target.key_secret_block,
                                       f"keySecretBlock of host {target.host}")
        except SecretUnavailable as exc:
            raise SshAuthFailed(f"{label}: {exc}") from None
    else:
        return None
    data = text.encode()
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
        for crypto_type, key_class in _KEY_TYPES:
            if isinstance(loaded, crypto_type):  # paramiko reads the OpenSSH form of them all
                openssh = loaded.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption())
                return key_class.from_private_key(io.StringIO(openssh.decode()))
    except TypeError:  # cryptography: the key is encrypted and no password was given
        raise SshAuthFailed(f"{label}: {source} is encrypted; load it into the SSH agent "
                            "and leave key_file unset") from None
    except Exception:  # its message might quote the key: say nothing of it
        raise SshAuthFailed(f"{label}: {source} is not a private key paramiko reads") from None
    raise SshAuthFailed(f"{label}: {source}: unsupported key type {type(loaded).__name__}")


