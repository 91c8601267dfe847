"""A real OpenSSH server on 127.0.0.1 for the SSH tests, started once per session.

It gets a free port, its own ed25519 host key and a test user key, generated in a
temporary folder; it lets in the user running the tests (root included, by key only)
and serves SFTP with internal-sftp. Without /usr/sbin/sshd the tests that use it are
skipped, unless CI is set: there a missing sshd (`make system-deps` installs
openssh-server) fails them instead of hiding them. `agent` adds a real ssh-agent
holding the test user key.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from drover.files import write_private
from drover.provider_settings import SshTarget
from tests.system.conftest import free_port, stop, wait_for

SSHD = Path("/usr/sbin/sshd")
HOST = "127.0.0.1"  # the only address these tests ever connect to


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    folder: Path
    host_key: paramiko.PKey      # the server's public host key
    user_key_file: Path          # a private key the server accepts
    log: Path

    @property
    def known_hosts_line(self) -> str:
        return f"[{HOST}]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def target(self, known_hosts: Path, **settings: object) -> SshTarget:
        return SshTarget(host=HOST, port=self.port, user=self.user, known_hosts=str(known_hosts),
                         **settings)


def new_key() -> tuple[str, str]:
    """A fresh ed25519 key: (OpenSSH private key, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def public_key(line: str) -> paramiko.PKey:
    kind, blob = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


def require(program: str) -> str:
    """The program's path; skip the test without it, or fail it when CI is set."""
    found = shutil.which(program)
    if found:
        return found
    reason = f"{program} is missing: install openssh-server openssh-client (make system-deps)"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI is set and {reason}")
    pytest.skip(reason)


def _config(folder: Path, port: int, host_key: Path, authorized: Path) -> str:
    return "\n".join([
        f"Port {port}",
        f"ListenAddress {HOST}",
        f"HostKey {host_key}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        f"AllowUsers {getpass.getuser()}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "StrictModes no",        # the temporary folder lives under world-writable /tmp
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "LogLevel DEBUG",
        "Subsystem sftp internal-sftp",
        "",
    ])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    require(str(SSHD))
    folder = tmp_path_factory.mktemp("sshd")
    host_private, host_public = new_key()
    user_private, user_public = new_key()
    write_private(folder / "host_ed25519", host_private)
    write_private(folder / "user_ed25519", user_private)
    (folder / "authorized_keys").write_text(user_public + "\n")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(_config(folder, port, folder / "host_ed25519", folder / "authorized_keys"))
    log = folder / "sshd.log"
    # sshd as root needs its privilege-separation folder; as another user it runs without
    with contextlib.suppress(PermissionError):
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    # -D: stay our child, so the fixture stops and reaps it (where PID 1 reaps nothing, a
    # daemonized sshd would linger as a zombie)
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)],
                            start_new_session=True)

    def ready() -> bool:
        assert proc.poll() is None, f"sshd exited {proc.returncode}:\n{log.read_text()}"
        return _listening(port)

    try:
        wait_for(ready, 10, f"sshd to listen on {HOST}:{port}", step=0.02)
        yield Sshd(port=port, user=getpass.getuser(), folder=folder,
                   host_key=public_key(host_public), user_key_file=folder / "user_ed25519",
                   log=log)
    finally:
        stop(proc)


@pytest.fixture
def agent(tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent holding the test user key, in SSH_AUTH_SOCK for one test."""
    ssh_agent, ssh_add = require("ssh-agent"), require("ssh-add")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen([ssh_agent, "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(sock.exists, 10, "ssh-agent to listen", step=0.02)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run([ssh_add, str(sshd.user_key_file)], capture_output=True, check=True,
                       timeout=10)
        yield sock
    finally:
        stop(proc)
