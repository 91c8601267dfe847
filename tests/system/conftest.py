"""System tests: a real `prefect server start` on 127.0.0.1, real workers, the real CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str          # .../api
    env: dict[str, str]
    home: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def run(self, *args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
        """Run the prefect CLI against this server; fail the test with its output if it fails."""
        result = subprocess.run([*PREFECT, *args], cwd=cwd, env={**self.env, **env},
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, (
            f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result


def wait_for(predicate, timeout: float, what: str, step: float = 0.25):
    """Poll a real service until `predicate()` is truthy (real processes: no clock to inject)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_UI_ENABLED": "false"}
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = Server(env["PREFECT_API_URL"], env, home)

    def healthy() -> bool:
        try:
            return httpx.get(f"{server.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None, (home / "server.log").read_text()
            return False

    try:
        wait_for(healthy, 120, "the Prefect server to answer /api/health")
        yield server
    finally:
        stop(proc)
        log.close()
