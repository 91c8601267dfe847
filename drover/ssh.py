"""SSH to hypervisor hosts over paramiko: pooled connections, commands, verified uploads.

It owns every byte drover sends over SSH. Connections are pooled per (host, port, user)
and shared by threads; a dead one is reopened on the next `connect`. Keys come from a
key string passed in, from `key_file`, from the target's Prefect Secret block (resolved
through drover.secretstore when a connection opens), or else from the SSH agent. Host
keys are checked against `target.known_hosts` with a RejectPolicy, on every `connect`,
pooled or not: an unknown key is never accepted, and nothing here ever writes to
known_hosts. Commands are argv lists joined with shlex.join and run under timeout(1) on
the host, so a command that runs out of time is killed there, not left behind. Argv shows
up in logs, in errors and in the host's process list: callers pass secrets on stdin,
never in argv.

    (the error tree is drawn in drover/ssh_auth.py, and re-exported here)
"""

from __future__ import annotations

import hashlib
import logging
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import paramiko
from tenacity import Retrying

from drover.lab.clock import SystemClock
from drover.provider_settings import SshTarget
from drover.retry import api_call, call
from drover.ssh_auth import (  # noqa: F401 (re-exported: callers catch these from here)
    _KEY_TYPES,
    CommandFailed,
    CommandResult,
    CommandTimeout,
    HostKeyChanged,
    HostKeyError,
    SshAuthFailed,
    SshError,
    SshUnavailable,
    UnknownHostKey,
    Upload,
    UploadFailed,
    _host_key_name,
    _known_hosts,
    _label,
    _private_key,
    _RejectUnknown,
)

log = logging.getLogger(__name__)

KILL_GRACE = 5.0      # after timeout(1) sends TERM: seconds until KILL, and until we hang up
_CHUNK = 256 * 1024


def _open(target: SshTarget, private_key: str | None, timeout: float) -> Connection:
    client, opened_at, seconds = _open_client(target, private_key, timeout)
    return Connection(target, client, opened_at, seconds,
                      opener=lambda: _open_client(target, private_key, timeout)[0])


def _open_client(target: SshTarget, private_key: str | None,
                 timeout: float) -> tuple[paramiko.SSHClient, float, float]:
    """An authenticated client, when its handshake began and how long it took."""
    label, known_hosts = _label(target), _known_hosts(target)[0]
    pkey = _private_key(target, private_key)
    client = paramiko.SSHClient()
    if known_hosts.exists():
        client.load_system_host_keys(str(known_hosts))  # paramiko never writes these back
    client.set_missing_host_key_policy(_RejectUnknown(target, known_hosts))
    opened_at, started = time.time(), time.monotonic()
    try:
        client.connect(target.host, target.port, target.user, pkey=pkey,
                       allow_agent=pkey is None, look_for_keys=False, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout)
    except BaseException as exc:
        client.close()
        if isinstance(exc, HostKeyError):
            raise
        if isinstance(exc, paramiko.BadHostKeyException):
            raise HostKeyChanged(target, exc.key, exc.expected_key, known_hosts) from exc
        if isinstance(exc, paramiko.AuthenticationException) or (
                isinstance(exc, paramiko.SSHException)
                and "No authentication methods" in str(exc)):
            how = "the agent" if pkey is None else "the key"
            raise SshAuthFailed(f"{label}: {target.user} not let in with {how}: {exc}") from exc
        if isinstance(exc, paramiko.IncompatiblePeer):
            raise SshError(f"{label}: no algorithm in common: {exc}") from exc
        if isinstance(exc, OSError | EOFError | paramiko.SSHException):
            raise SshUnavailable(f"{label}: {exc or exc.__class__.__name__}") from exc
        raise
    seconds = time.monotonic() - started
    transport = client.get_transport()
    assert transport is not None  # connect() succeeded
    # without it, each channel request waits out a delayed ACK (~40 ms a command)
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = transport.get_remote_server_key()
    log.info("%s: connected as %s (host key %s %s)", label, target.user, key.get_name(),
             key.fingerprint)
    return client, opened_at, seconds


class _Client:
    def __init__(self, client: paramiko.SSHClient) -> None:
        self.client, self.channels = client, 0


class Connection:
    """An authenticated session to one host; threads share it, one channel per command.

    OpenSSH allows 10 channels per connection (MaxSessions); past MAX_CHANNELS at once, a
    second connection to the host is opened for the overflow (its host key checked the same
    way) and shared in turn, so many nodes waiting on one host never see 'Connect failed'.
    """

    MAX_CHANNELS = 8

    def __init__(self, target: SshTarget, client: paramiko.SSHClient, opened_at: float = 0.0,
                 connect_seconds: float = 0.0,
                 opener: Callable[[], paramiko.SSHClient] | None = None) -> None:
        self.target, self.label, self._client = target, _label(target), client
        # when the handshake began (wall clock) and how long it and authentication took
        self.opened_at, self.connect_seconds = opened_at, connect_seconds
        self._opener, self._lock, self._opening = opener, threading.Lock(), threading.Lock()
        self._clients = [_Client(client)]

    @contextmanager
    def _channel_room(self) -> Iterator[paramiko.SSHClient]:
        """A client with room for one more channel, held until the block ends."""
        room = self._take_room()
        if room is None:
            with self._opening:  # one overflow handshake at a time; then look again
                room = self._take_room()
                if room is None:
                    assert self._opener is not None
                    room = _Client(self._opener())
                    room.channels = 1
                    with self._lock:
                        self._clients.append(room)
                    log.info("%s: %d channels busy; opened connection %d", self.label,
                             self.MAX_CHANNELS * (len(self._clients) - 1), len(self._clients))
        try:
            yield room.client
        finally:
            with self._lock:
                room.channels -= 1

    @property
    def transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshUnavailable(f"{self.label}: the connection is closed; connect again")
        return transport

    @property
    def is_open(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _take_room(self) -> _Client | None:
        with self._lock:
            room = next((c for c in self._clients if c.channels < self.MAX_CHANNELS
                         and _active(c.client)), None)
            if room is None and self._opener is None:
                room = self._clients[0]  # nothing to open more with: let the host decide
            if room is not None:
                room.channels += 1
            return room

    def close(self) -> None:
        for entry in self._clients:
            entry.client.close()

    def check_host_key(self, target: SshTarget) -> None:
        """Check the key this session was opened with against target.known_hosts, now."""
        known_hosts, known = _known_hosts(target)
        key = self.transport.get_remote_server_key()
        entry = known.lookup(_host_key_name(target))
        if entry is None:
            raise UnknownHostKey(target, key, known_hosts)
        expected = entry.get(key.get_name())
        if expected != key:
            raise HostKeyChanged(target, key, expected or next(iter(entry.values())),
                                 known_hosts)

    def run(self, command: Sequence[str], timeout: float, stdin: bytes | None = None, *,
            check: bool = True) -> CommandResult:
        """Run argv `command` (command[0] a program; use ["sh", "-c", script] for shell
        syntax), feeding it `stdin`, which is how secrets go. Raises CommandFailed on a
        non-zero exit unless not `check`, and CommandTimeout after `timeout` seconds."""
        argv, shown = list(command), shlex.join(command)
        line = shlex.join(["timeout", "-k", f"{KILL_GRACE:.0f}", f"{timeout:.3f}", *argv])
        started = time.monotonic()
        deadline = started + timeout + 2 * KILL_GRACE  # the host's kill, or we hang up
        try:
            with self._channel_room() as client:
                transport = client.get_transport()
                if transport is None or not transport.is_active():
                    raise SshUnavailable(f"{self.label}: the connection is closed; "
                                         "connect again")
                channel = transport.open_session(timeout=timeout)
                out, err, finished, status = _finish(channel, line, stdin, timeout, deadline)
            alive = self.is_open
        except TimeoutError:
            status, out, err, alive = None, b"", b"", True
        except (OSError, EOFError, paramiko.SSHException) as exc:
            why = exc or type(exc).__name__
            raise SshUnavailable(f"{self.label}: `{shown}`: {why}") from exc
        elapsed = time.monotonic() - started
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        log.debug("%s: `%s` exited %s in %.2fs", self.label, shown, status, elapsed)
        if status is None or (status in (124, 137) and elapsed >= timeout):  # timeout(1)
            raise CommandTimeout(self.label, argv, timeout, stdout, stderr)
        if status < 0 and not alive:
            raise SshUnavailable(f"{self.label}: `{shown}`: the connection dropped")
        if status != 0 and check:
            raise CommandFailed(self.label, argv, status, stderr)
        return CommandResult(argv, status, stdout, stderr)

    def sha256(self, remote: str, timeout: float) -> str:
        """The sha256 of a file on the host, computed there with sha256sum."""
        result = self.run(["sha256sum", "--", remote], timeout)
        return result.stdout.split()[0].lstrip("\\")  # '\' flags an escaped file name

    def upload(self, local: Path, remote: str, timeout: float = 300.0,
               mode: int | None = None) -> Upload:
        """Copy `local` to `remote` by SFTP through `<remote>.part`, renamed once its sha256
        matches; skipped when `remote` already matches, resumed when the .part is a prefix.
        `timeout` bounds each step (a remote hash, an SFTP request), not the whole copy.
        `mode` is set on the .part before any byte is written, so it holds on `remote`."""
        local = Path(local)
        size, digest = local.stat().st_size, _sha256_file(local)
        part = f"{remote}.part"
        try:
            with self._channel_room() as client, client.open_sftp() as sftp:
                sftp.get_channel().settimeout(timeout)
                if _size(sftp, remote) == size and self.sha256(remote, timeout) == digest:
                    if mode is not None:
                        sftp.chmod(remote, mode)
                    log.info("%s: %s already there (sha256 %s)", self.label, remote, digest)
                    return Upload(remote, digest, skipped=True, transferred=0, resumed_from=0)
                offset = _size(sftp, part) or 0
                if offset and (offset > size or self.sha256(part, timeout)
                               != _sha256_file(local, limit=offset)):
                    offset = 0  # not a prefix of this file: start over
                with (local.open("rb") as source,
                      sftp.open(part, "r+b" if offset else "wb") as target):
                    target.set_pipelined(True)
                    if mode is not None:
                        target.chmod(mode)
                    source.seek(offset)
                    target.seek(offset)
                    while chunk := source.read(_CHUNK):
                        target.write(chunk)
                if self.sha256(part, timeout) != digest:
                    sftp.remove(part)
                    raise UploadFailed(f"{self.label}: {part} does not match {local} after "
                                       "the upload; removed it")
                sftp.posix_rename(part, remote)  # atomic: a half file never has the name
        except (EOFError, ConnectionError, TimeoutError, paramiko.SSHException) as exc:
            raise SshUnavailable(f"{self.label}: upload to {remote}: {exc}") from exc
        except OSError as exc:  # the SFTP server refused: permission, no such folder, full
            raise UploadFailed(f"{self.label}: upload {local} to {remote}: {exc}") from exc
        log.info("%s: uploaded %s to %s (%d bytes%s)", self.label, local.name, remote,
                 size - offset, f", resumed at {offset}" if offset else "")
        return Upload(remote, digest, skipped=False, transferred=size - offset,
                      resumed_from=offset)


def _finish(channel: paramiko.Channel, line: str, stdin: bytes | None, timeout: float,
            deadline: float) -> tuple[bytes, bytes, bool, int | None]:
    """Run `line` on the open channel: (stdout, stderr, finished, exit status or None)."""
    try:
        channel.settimeout(timeout)  # bounds sending stdin to a command not reading it
        channel.exec_command(line)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        out, err, finished = _collect(channel, deadline)
        return out, err, finished, channel.recv_exit_status() if finished else None
    finally:
        channel.close()


def _active(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


def _collect(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes, bool]:
    """Read stdout and stderr until the host closes the channel; False if time ran out."""
    out, err = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            out += channel.recv(_CHUNK)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(_CHUNK)
        if channel.closed and not (channel.recv_ready() or channel.recv_stderr_ready()):
            return bytes(out), bytes(err), True
        remaining = deadline - time.monotonic()  # real I/O: a wall-clock deadline
        if remaining <= 0:
            return bytes(out), bytes(err), False
        select.select([channel], [], [], remaining)  # woken by data, or by the close


def _size(sftp: paramiko.SFTPClient, path: str) -> int | None:
    try:
        return sftp.stat(path).st_size
    except FileNotFoundError:
        return None


def _sha256_file(path: Path, limit: int | None = None) -> str:
    digest, left = hashlib.sha256(), limit
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK if left is None else min(_CHUNK, left)):
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


class Pool:
    """Open connections by (host, port, user), shared by threads; dead ones are reopened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[tuple[str, int, str], Connection] = {}
        self._opening: dict[tuple[str, int, str], threading.Lock] = {}

    def connect(self, target: SshTarget, private_key: str | None = None, *,
                policy: Retrying | None = None, timeout: float = 10.0) -> Connection:
        """The pooled connection to `target` (its host key checked again), or a new one.

        `private_key` is a key given by the caller; without it, target.key_file, else
        target.key_secret_block resolved through drover.secretstore, else the SSH agent.
        SshUnavailable is retried by `policy` (default drover.retry.api_call), which ends
        in RetriesExhausted.
        """
        key = (target.host, target.port, target.user)
        with self._lock:
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:  # one handshake per host at a time; other hosts do not wait
            with self._lock:
                connection = self._connections.pop(key, None)
            if connection is not None and connection.is_open:
                try:
                    connection.check_host_key(target)
                except HostKeyError:
                    connection.close()
                    raise
            else:
                if connection is not None:
                    log.info("%s: connection closed; reconnecting", connection.label)
                    connection.close()
                connection = call(policy or api_call(SystemClock()), _open, target,
                                  private_key, timeout)
            with self._lock:
                self._connections[key] = connection
            return connection

    def close_all(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.close()


_POOL = Pool()


def connect(target: SshTarget, private_key: str | None = None, *,
            policy: Retrying | None = None, timeout: float = 10.0) -> Connection:
    """A connection to `target` from the process-wide pool (see Pool.connect)."""
    return _POOL.connect(target, private_key, policy=policy, timeout=timeout)


def close_all() -> None:
    """Close every pooled connection (at the end of a flow run, or in tests)."""
    _POOL.close_all()


__all__ = [
    "CommandFailed", "CommandResult", "CommandTimeout", "Connection", "HostKeyChanged",
    "HostKeyError", "Pool", "SshAuthFailed", "SshError", "SshUnavailable", "UnknownHostKey",
    "Upload", "UploadFailed", "close_all", "connect",
]
