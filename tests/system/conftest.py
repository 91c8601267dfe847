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
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_UI_ENABLED": "true",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}  # the UI test loads its pages
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


@pytest.fixture(scope="session")
def system_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One DROVER_HOME shared by the tests, the CLI they run and the worker."""
    home = tmp_path_factory.mktemp("drover-home")
    before = os.environ.get("DROVER_HOME")
    os.environ["DROVER_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("DROVER_HOME", None)
    else:
        os.environ["DROVER_HOME"] = before


@pytest.fixture(scope="session")
def project(prefect_server: Server, system_home: Path) -> Server:
    """prefect.yaml deployed on the server: work pool, deployments, schedules, triggers.

    The scheduled deployments are then paused, so their runs (for clusters these tests
    do not have) stay out of the worker's way.
    """
    prefect_server.run("work-pool", "create", "drover-local", "--type", "process")
    prefect_server.run("--no-prompt", "deploy", "--all")
    with prefect_server.api() as api:
        for name in ("check-health/check-health", "upgrade-fleet/upgrade-fleet"):
            deployment = api.get(f"/deployments/name/{name}").json()
            api.patch(f"/deployments/{deployment['id']}", json={"paused": True})
    return prefect_server


@pytest.fixture(scope="session")
def worker(project: Server, system_home: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A process worker on the project's pool; yields its log file."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", "drover-local", "--limit", "8"], cwd=REPO,
        env={**project.env, "DROVER_HOME": str(system_home),
             "PREFECT_WORKER_QUERY_SECONDS": "1",
             # flow runs read configs only under their config root: the tests' temp folders
             "DROVER_CONFIG_ROOT": str(tmp_path_factory.getbasetemp())},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield log_path
    finally:
        stop(proc)
        log.close()


def lab_cluster(folder: Path, name: str, workers: int = 1, **provider: object) -> str:
    """Deploy a small lab cluster with the library (no Prefect): instant, virtual clock."""
    from drover import deploy
    from drover.spec import load_spec
    from tests.flows.conftest import lab_config

    config = lab_config(folder, name=name, control_planes=1, workers=workers, **provider)
    deploy.converge(deploy.Infra.open(load_spec(config)))
    return config


TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def finished_run(api: httpx.Client, run_id: str, timeout: float = 240) -> dict:
    def done() -> dict | None:
        run = api.get(f"/flow_runs/{run_id}").json()
        return run if run["state"]["type"] in TERMINAL else None

    return wait_for(done, timeout, f"flow run {run_id} to finish")


def runs_of(api: httpx.Client, deployment: str) -> list[dict]:
    deployment_id = api.get(f"/deployments/name/{deployment}").json()["id"]
    return api.post("/flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployment_id]}}}).json()
