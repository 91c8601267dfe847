"""drover server's bookkeeping without starting anything: which API the CLI uses, and what
status says; PostgreSQL's command line as root and as a user."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from drover import postgres, server
from drover.files import write_private


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def record(server_pid: int, port: int, workers: dict[str, int] | None = None) -> None:
    write_private(server.state_file(), json.dumps({
        "url": f"http://127.0.0.1:{port}/api", "database": "sqlite", "project": "/p",
        "server_pid": server_pid, "workers": workers or {}}))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_without_a_server_the_cli_uses_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert server.api_url() is None
    assert server.status() == {"running": False}


def test_prefect_api_url_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch,
                                                   listening: int) -> None:
    record(os.getpid(), listening)
    monkeypatch.setenv("PREFECT_API_URL", "http://10.0.0.1:4200/api")
    assert server.api_url() == "http://10.0.0.1:4200/api"


def test_a_running_server_is_used(monkeypatch: pytest.MonkeyPatch, listening: int) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    record(os.getpid(), listening, {"drover-local": os.getpid(), "pool-fra": dead_pid()})
    assert server.api_url() == f"http://127.0.0.1:{listening}/api"
    state = server.status()
    assert state["running"] and state["database"] == "sqlite"
    assert {pool: w["alive"] for pool, w in state["workers"].items()} == {
        "drover-local": True, "pool-fra": False}


@pytest.mark.parametrize("case", ["process gone", "port closed"])
def test_a_stale_record_is_not_used(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
        record(dead_pid() if case == "process gone" else os.getpid(), port)
        assert server.api_url() is None
        assert server.status()["running"] is False


def test_the_server_state_file_is_private() -> None:
    record(os.getpid(), 1)
    assert oct(server.state_file().stat().st_mode & 0o777) == "0o600"
    assert oct(server.folder().stat().st_mode & 0o777) == "0o700"


def test_postgres_runs_as_a_non_root_user_even_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert postgres.as_owner(["pg_ctl", "start"])[:2] == ["unshare", "--user"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert postgres.as_owner(["pg_ctl", "start"]) == ["pg_ctl", "start"]


def test_an_external_database_url_starts_nothing(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path) -> None:
    monkeypatch.setenv("DROVER_POSTGRES_URL", "postgresql+asyncpg://u:p@db:5432/prefect")
    assert postgres.start(tmp_path / "pg") == "postgresql+asyncpg://u:p@db:5432/prefect"
    assert not (tmp_path / "pg").exists()
