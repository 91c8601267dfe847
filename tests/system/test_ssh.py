"""drover.ssh against a real sshd on 127.0.0.1 (tests/system/sshd.py): keys, host keys,
commands and their timeouts, the connection pool, verified and resumed uploads.

sshd runs on this machine as the user running the tests, so a remote path is also a local
one: the tests read what an upload wrote straight from the file system.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from drover import secretstore, ssh
from drover.errors import RetriesExhausted, TransientError
from drover.lab.clock import ManualClock
from drover.provider_settings import SshTarget
from drover.retry import api_call
from tests.system.conftest import free_port, wait_for
from tests.system.sshd import HOST, Sshd, agent, new_key, public_key, sshd

__all__ = ["agent", "sshd"]  # fixtures, imported so that pytest finds them here

pytestmark = pytest.mark.system
DROVER = Path(__file__).resolve().parents[2] / "drover"


@pytest.fixture
def known_hosts(tmp_path: Path, sshd: Sshd) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line)
    return path


@pytest.fixture
def target(sshd: Sshd, known_hosts: Path) -> SshTarget:
    return sshd.target(known_hosts, key_file=str(sshd.user_key_file))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def pool() -> Iterator[ssh.Pool]:
    pool = ssh.Pool()
    yield pool
    pool.close_all()


@pytest.fixture
def conn(pool: ssh.Pool, target: SshTarget, clock: ManualClock) -> ssh.Connection:
    return pool.connect(target, policy=api_call(clock))


# ---- commands ------------------------------------------------------------------------------


def test_run_returns_stdout_and_exit_status(conn):
    result = conn.run(["printf", "%s|", "a b", "$HOME", "it's", "; true"], timeout=10)

    assert result.stdout == "a b|$HOME|it's|; true|"  # shlex.join: no shell expansion
    assert result.exit_status == 0
    assert result.stderr == ""


def test_run_feeds_stdin_to_the_command(conn):
    secret = b"a secret goes on stdin, never in argv"

    result = conn.run(["sha256sum"], timeout=10, stdin=secret)

    assert result.stdout.split()[0] == hashlib.sha256(secret).hexdigest()


def test_non_zero_exit_raises_command_failed_with_stderr_tail(conn):
    with pytest.raises(ssh.CommandFailed) as err:
        conn.run(["sh", "-c", "echo working; echo disk full >&2; exit 3"], timeout=10)

    assert err.value.exit_status == 3
    assert err.value.stderr == "disk full\n"
    assert str(err.value).startswith(f"{HOST}:")
    assert "`sh -c 'echo working; echo disk full >&2; exit 3'` exited 3: disk full" \
        in str(err.value)


def test_non_zero_exit_is_returned_when_not_checked(conn):
    result = conn.run(["sh", "-c", "exit 4"], timeout=10, check=False)

    assert result.exit_status == 4


def test_timeout_kills_the_remote_command_and_frees_the_connection(conn):
    started = time.monotonic()
    with pytest.raises(ssh.CommandTimeout) as err:
        conn.run(["sh", "-c", "echo $$; exec sleep 30"], timeout=1)

    assert time.monotonic() - started < 5
    assert isinstance(err.value, TimeoutError)
    pid = int(err.value.stdout)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 5, f"the remote sleep {pid} to end",
             step=0.05)
    assert conn.run(["echo", "still here"], timeout=10).stdout == "still here\n"


# ---- connections and keys ------------------------------------------------------------------


def test_connection_is_reused_per_host_port_and_user(pool, target, clock):
    first = pool.connect(target, policy=api_call(clock))
    second = pool.connect(target, policy=api_call(clock))

    assert second is first
    assert second.transport is first.transport


def test_module_pool_reuses_its_connection(target, clock):
    try:
        transport = ssh.connect(target, policy=api_call(clock)).transport
        assert ssh.connect(target, policy=api_call(clock)).transport is transport
    finally:
        ssh.close_all()


def test_closed_connection_is_reopened(pool, target, clock):
    first = pool.connect(target, policy=api_call(clock))
    first.close()

    second = pool.connect(target, policy=api_call(clock))

    assert second.is_open and second is not first
    assert second.run(["true"], timeout=10).exit_status == 0


def test_connection_dropped_mid_command_is_unavailable_then_reopened(pool, target, clock):
    conn = pool.connect(target, policy=api_call(clock))
    # the command kills the sshd process serving this connection: the parent of timeout(1)
    kill_sshd = "kill -9 $(cut -d' ' -f4 /proc/$PPID/stat); exec sleep 3"

    with pytest.raises(ssh.SshUnavailable, match="the connection dropped"):
        conn.run(["sh", "-c", kill_sshd], timeout=10)

    again = pool.connect(target, policy=api_call(clock))
    assert again is not conn
    assert again.run(["echo", "back"], timeout=10).stdout == "back\n"


def test_threads_share_one_connection(pool, target, clock):
    def work(i: int) -> tuple[object, str]:
        connection = pool.connect(target, policy=api_call(clock))
        return connection.transport, connection.run(["echo", str(i)], timeout=10).stdout

    with ThreadPoolExecutor(4) as executor:
        results = list(executor.map(work, range(4)))

    assert len({id(transport) for transport, _ in results}) == 1
    assert [out for _, out in results] == [f"{i}\n" for i in range(4)]


def test_key_from_a_secret_block_value(pool, sshd, known_hosts, clock, caplog):
    key = sshd.user_key_file.read_text()
    target = sshd.target(known_hosts, key_secret_block="hypervisor-ssh-key")
    caplog.set_level("DEBUG", logger="drover.ssh")

    assert pool.connect(target, key, policy=api_call(clock)).run(
        ["whoami"], timeout=10).stdout == f"{sshd.user}\n"
    ours = [r.getMessage() for r in caplog.records if r.name == "drover.ssh"]
    assert ours and all(line.startswith(f"{HOST}:{sshd.port}: ") for line in ours)
    body = "".join(key.splitlines()[1:-1])
    assert body[:40] not in caplog.text


def test_unresolved_secret_block_is_an_error_before_any_connection(pool, sshd, known_hosts):
    target = sshd.target(known_hosts, key_secret_block="hypervisor-ssh-key")
    # no resolver (a process that never imported tasks/): flows' tests may have set one
    previous = secretstore.register_resolver(None)
    try:
        with pytest.raises(ssh.SshAuthFailed, match="'hypervisor-ssh-key' was not resolved"):
            pool.connect(target, policy=api_call(ManualClock(), attempts=1))
    finally:
        secretstore.register_resolver(previous)


def test_key_the_host_does_not_know_is_refused(pool, sshd, known_hosts, clock):
    stranger, _ = new_key()
    target = sshd.target(known_hosts)

    with pytest.raises(ssh.SshAuthFailed, match=f"{sshd.user} not let in with the key") as err:
        pool.connect(target, stranger, policy=api_call(clock))

    assert not isinstance(err.value, TransientError)
    assert stranger.splitlines()[1] not in str(err.value)


@pytest.mark.parametrize(("content", "reason"), [
    ("not a key at all", "is not a private key paramiko reads"),
    (None, "is encrypted; load it into the SSH agent"),
])
def test_unusable_key_file_is_refused_without_quoting_it(pool, sshd, known_hosts, tmp_path,
                                                        content, reason):
    if content is None:
        content = serialization.load_ssh_private_key(
            sshd.user_key_file.read_bytes(), password=None).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"passphrase")).decode()
    key_file = tmp_path / "key"
    key_file.write_text(content)

    with pytest.raises(ssh.SshAuthFailed, match=reason) as err:
        pool.connect(sshd.target(known_hosts, key_file=str(key_file)),
                     policy=api_call(ManualClock(), attempts=1))

    lines = content.splitlines()
    assert lines[len(lines) // 2] not in str(err.value)  # a line of the key body, or the text
    assert not isinstance(err.value, TransientError)


def test_key_from_the_ssh_agent(pool, sshd, known_hosts, clock, agent):
    conn = pool.connect(sshd.target(known_hosts), policy=api_call(clock))

    assert conn.run(["whoami"], timeout=10).stdout == f"{sshd.user}\n"


# ---- host keys -----------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_its_fingerprint_and_the_fix(pool, sshd, tmp_path,
                                                                     clock):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    target = sshd.target(known_hosts, key_file=str(sshd.user_key_file))

    with pytest.raises(ssh.UnknownHostKey) as err:
        pool.connect(target, policy=api_call(clock))

    message = str(err.value)
    assert message.startswith(f"{HOST}:{sshd.port}: host key ssh-ed25519 ")
    assert sshd.host_key.fingerprint in message
    assert f"ssh-keyscan -p {sshd.port} {HOST} >> {known_hosts}" in message
    assert "out of band" in message
    assert known_hosts.read_text() == ""  # nothing was trusted on the way


def test_missing_known_hosts_file_trusts_nothing_and_stays_missing(pool, sshd, tmp_path, clock):
    known_hosts = tmp_path / "absent" / "known_hosts"

    with pytest.raises(ssh.UnknownHostKey):
        pool.connect(sshd.target(known_hosts, key_file=str(sshd.user_key_file)),
                     policy=api_call(clock))

    assert not known_hosts.parent.exists()


def test_pooled_connection_is_checked_against_the_callers_known_hosts(pool, sshd, target,
                                                                      tmp_path, clock):
    pool.connect(target, policy=api_call(clock))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")

    with pytest.raises(ssh.UnknownHostKey):
        pool.connect(sshd.target(empty, key_file=str(sshd.user_key_file)),
                     policy=api_call(clock))


def test_changed_host_key_is_refused_as_a_possible_attack(pool, sshd, tmp_path, clock):
    _, impostor = new_key()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{sshd.port} {impostor}\n")
    before = known_hosts.read_text()

    with pytest.raises(ssh.HostKeyChanged) as err:
        pool.connect(sshd.target(known_hosts, key_file=str(sshd.user_key_file)),
                     policy=api_call(clock))

    assert "man-in-the-middle" in str(err.value)
    assert err.value.fingerprint == sshd.host_key.fingerprint
    assert err.value.expected_fingerprint == public_key(impostor).fingerprint
    assert public_key(impostor).fingerprint in str(err.value)
    assert known_hosts.read_text() == before


def test_refused_port_is_unavailable_and_retried_without_real_sleep(pool, sshd, known_hosts,
                                                                    clock):
    target = sshd.target(known_hosts, key_file=str(sshd.user_key_file)).model_copy(
        update={"port": free_port()})  # nothing listens there
    started = time.monotonic()

    with pytest.raises(RetriesExhausted, match="gave up after 3 attempts") as err:
        pool.connect(target, policy=api_call(clock, attempts=3))

    assert isinstance(err.value.__cause__, ssh.SshUnavailable)
    assert isinstance(err.value.__cause__, TransientError)
    assert str(err.value.__cause__).startswith(f"{HOST}:{target.port}: ")
    assert clock.now() > ManualClock().now()  # the waits happened on the injected clock
    assert time.monotonic() - started < 2


def test_library_never_accepts_unknown_host_keys():
    offenders = [f"{path}: {word}" for path in DROVER.rglob("*.py")
                 for word in ("AutoAddPolicy", "WarningPolicy", "no_verify")
                 if word in path.read_text()]

    assert offenders == []


# ---- uploads -------------------------------------------------------------------------------


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "image.raw"
    path.write_bytes(os.urandom(1 << 20))
    return path


def test_upload_is_verified_then_skipped_when_the_host_has_it(conn, payload, tmp_path):
    remote = tmp_path / "remote" / "image.raw"
    remote.parent.mkdir()

    first = conn.upload(payload, str(remote))
    mtime = remote.stat().st_mtime_ns
    second = conn.upload(payload, str(remote))

    assert (first.skipped, first.transferred, first.resumed_from) == (False, 1 << 20, 0)
    assert remote.read_bytes() == payload.read_bytes()
    assert not Path(f"{remote}.part").exists()
    assert (second.skipped, second.transferred) == (True, 0)
    assert second.sha256 == first.sha256
    assert remote.stat().st_mtime_ns == mtime


def test_upload_resumes_a_truncated_part(conn, payload, tmp_path):
    remote = tmp_path / "image.raw.remote"
    Path(f"{remote}.part").write_bytes(payload.read_bytes()[:300_000])

    result = conn.upload(payload, str(remote))

    assert (result.resumed_from, result.transferred) == (300_000, (1 << 20) - 300_000)
    assert remote.read_bytes() == payload.read_bytes()
    assert not Path(f"{remote}.part").exists()


def test_upload_rewrites_a_part_that_is_not_a_prefix(conn, payload, tmp_path):
    remote = tmp_path / "image.raw.remote"
    Path(f"{remote}.part").write_bytes(b"x" * 300_000)

    result = conn.upload(payload, str(remote))

    assert (result.resumed_from, result.transferred) == (0, 1 << 20)
    assert remote.read_bytes() == payload.read_bytes()


def test_upload_replaces_a_different_file(conn, payload, tmp_path):
    remote = tmp_path / "image.raw.remote"
    remote.write_bytes(b"an older image" * 1000)

    result = conn.upload(payload, str(remote))

    assert not result.skipped
    assert remote.read_bytes() == payload.read_bytes()


def test_upload_to_a_missing_folder_fails_clearly(conn, payload, tmp_path):
    with pytest.raises(ssh.UploadFailed, match=f"^{HOST}:"):
        conn.upload(payload, str(tmp_path / "no" / "such" / "image.raw"))
