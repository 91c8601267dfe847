"""More commands at once than OpenSSH lets one connection carry (MaxSessions, 10): the
overflow goes over a second connection to the same host, so every command runs, against
a real sshd on 127.0.0.1 (tests/system/sshd.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drover import ssh
from drover.lab.clock import ManualClock
from drover.retry import api_call
from tests.system.sshd import Sshd, sshd  # noqa: F401 (fixture)


def test_more_commands_at_once_than_a_connection_carries_all_run(
        sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line)
    target = sshd.target(known_hosts, key_file=str(sshd.user_key_file))
    pool = ssh.Pool()
    try:
        conn = pool.connect(target, policy=api_call(ManualClock()))
        with ThreadPoolExecutor(14) as workers:  # each holds its channel for a while
            done = list(workers.map(lambda i: conn.run(["sh", "-c", f"sleep 1; echo {i}"], 30),
                                    range(14)))

        assert sorted(int(r.stdout) for r in done) == list(range(14))
        assert len(conn._clients) == 2  # one overflow connection, shared by the rest
        assert pool.connect(target) is conn  # callers still see one connection per host
    finally:
        pool.close_all()
