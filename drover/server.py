"""drover's own Prefect server: `prefect server start` on 127.0.0.1 with its PREFECT_HOME
under $DROVER_HOME/server, on SQLite or on drover's PostgreSQL (drover/postgres.py), with the
deployments of prefect.yaml registered and one process worker per work pool (drover-local and
each site's pool of the fleet file). What runs is recorded in server/server.json, so `status`
and `stop` find it again, and so `api_url()` lets the CLI use the server without a start-up.
Prefect itself is only ever run as a subprocess here: the library never imports it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from drover import postgres
from drover.errors import StateError
from drover.files import write_private
from drover.home import drover_home
from drover.statefile import private_dir

LOCAL_POOL = "drover-local"
PREFECT = [sys.executable, "-m", "prefect"]
#: worker settings: pick up a new run within a second, beat often enough to be missed soon
WORKER_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_HEARTBEAT_SECONDS": "5"}
#: a site's worker asks every 2 s: a poll costs ~25 ms of CPU (server, database, worker; 11 pools
#: at 1 s kept 0.38 of a core busy idle, at 3 s 0.19); drover-local, which the CLI waits on,
#: keeps 1 s
SITE_WORKER_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "2"}
#: server settings: a flow waiting for a concurrency slot (the fleet's) asks again within 5 s,
#: not up to 30 s, so a freed slot does not stay idle
SERVER_ENV = {"PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "5"}


def folder() -> Path:
    return private_dir(drover_home() / "server")


def state_file() -> Path:
    return folder() / "server.json"


def read_state() -> dict[str, Any] | None:
    try:
        return json.loads(state_file().read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"{state_file()}: unreadable ({exc}); stop what it started by hand "
                         "and remove the file") from None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process is dead too
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def answers(url: str, timeout: float = 0.3) -> bool:
    """True when something accepts connections at the host and port of `url`."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def api_url() -> str | None:
    """The Prefect API the CLI should use: $PREFECT_API_URL if set, else the URL of a running
    `drover server` (its process alive and its port answering), else None (ephemeral mode).
    Reads one small file and opens one loopback connection: well under 50 ms."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    try:
        state = read_state()
    except StateError:
        return None
    if state and alive(state.get("server_pid")) and answers(state["url"]):
        return str(state["url"])
    return None


def prefect_env(url: str, database_url: str | None) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(private_dir(folder() / "prefect-home")),
           "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DROVER_HOME": str(drover_home())}
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return env


def spawn(command: list[str], log_name: str, env: dict[str, str], cwd: Path | None = None
          ) -> int:
    """Start a long-running process in its own session, output to logs/<log_name>; its pid."""
    logs = private_dir(folder() / "logs")
    fd = os.open(logs / log_name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def wait_healthy(url: str, pid: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise StateError(f"the Prefect server exited while starting; see "
                             f"{folder() / 'logs' / 'server.log'}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # a real process starting: nothing to inject
    raise StateError(f"the Prefect server did not answer {url}/health in {timeout:.0f}s; see "
                     f"{folder() / 'logs' / 'server.log'}")


def prefect(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run one `prefect` CLI command; its output, or a StateError with its last lines."""
    result = subprocess.run([*PREFECT, *args], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=600, check=False)
    if result.returncode != 0:
        tail = " / ".join((result.stdout + result.stderr).strip().splitlines()[-4:])
        raise StateError(f"`prefect {' '.join(args)}` failed in {cwd}: {tail[:600]}")
    return result.stdout


def start_worker(pool: str, env: dict[str, str], project: Path, limit: int | None) -> int:
    """A process worker on `pool` (created if missing) running flows from `project`."""
    command = [*PREFECT, "worker", "start", "--pool", pool, "--type", "process",
               "--name", f"drover-{pool}"]
    return spawn([*command, *(["--limit", str(limit)] if limit else [])], f"worker-{pool}.log",
                 {**env, **WORKER_ENV, **({} if pool == LOCAL_POOL else SITE_WORKER_ENV)},
                 cwd=project)


def wait_pools(url: str, pools: list[str], timeout: float = 120) -> None:
    """Wait until each pool exists (its worker creates it on start), then make its flow runs
    start the engine directly: with no command, Prefect's process worker starts a workspace
    supervisor that imports prefect, then execs a second Python that imports it again."""
    deadline = time.monotonic() + timeout
    command = f"{sys.executable} -m prefect.engine"
    with httpx.Client(base_url=url, timeout=10) as api:
        for pool in pools:
            while (found := api.get(f"/work_pools/{pool}")).status_code != 200:
                if time.monotonic() > deadline:
                    raise StateError(f"work pool {pool} was not created in {timeout:.0f}s; see "
                                     f"{folder() / 'logs' / f'worker-{pool}.log'}")
                time.sleep(0.5)
            template = found.json()["base_job_template"]
            field = template.get("variables", {}).get("properties", {}).get("command")
            if field is not None and field.get("default") != command:
                field["default"] = command
                api.patch(f"/work_pools/{pool}", json={"base_job_template": template})


def ensure_workers(state: dict[str, Any], pools: list[str], limit: int | None) -> list[str]:
    """Start a worker for each pool that has none alive (recorded in the state file), and
    wait until every pool exists; the pools whose worker was (re)started."""
    env = prefect_env(state["url"], None)  # workers talk to the API, never to the database
    started = []
    for pool in pools:
        if not alive(state["workers"].get(pool)):
            state["workers"][pool] = start_worker(pool, env, Path(state["project"]), limit)
            write_private(state_file(), json.dumps(state, indent=1))
            started.append(pool)
    wait_pools(state["url"], pools)
    return started


def start(project: Path, use_postgres: bool = False, site_pools: list[str] | None = None,
          port: int | None = None, worker_limit: int | None = 8,
          register: bool = True) -> dict[str, Any]:
    """Start the server (and PostgreSQL), a worker per pool, and `prefect deploy --all` from
    `project`; a running server is left as it is. The status afterwards."""
    state = read_state()
    pools = list(dict.fromkeys([LOCAL_POOL, *(site_pools or [])]))
    if state and alive(state.get("server_pid")):
        ensure_workers(state, pools, worker_limit)  # a new site, or a worker that died
        return status()
    if state:  # the server died: its workers (talking to nobody) go too, then start afresh
        stop()
    if not (project / "prefect.yaml").is_file():
        raise StateError(f"{project}: no prefect.yaml here; run from drover's project folder "
                         "or pass --project")
    database_url = postgres.start(folder() / "postgres") if use_postgres else None
    port = port or postgres.free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(url, database_url)
    state = {"url": url, "database": "postgresql" if use_postgres else "sqlite",
             "project": str(project), "workers": {}}
    state["server_pid"] = spawn([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port)], "server.log", {**env, **SERVER_ENV})
    write_private(state_file(), json.dumps(state, indent=1))
    try:
        wait_healthy(url, state["server_pid"])
        ensure_workers(state, pools, worker_limit)
        if register:
            prefect(["--no-prompt", "deploy", "--all"], prefect_env(url, None), project)
    except BaseException:
        stop()
        raise
    return status()


def terminate(pid: int | None, timeout: float = 20) -> None:
    """SIGTERM the process group of `pid`, SIGKILL it after `timeout` seconds."""
    if not alive(pid):
        return
    assert pid is not None
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)


def stop() -> list[str]:
    """Stop the workers, the server and drover's PostgreSQL; what was stopped."""
    state = read_state() or {"workers": {}}
    stopped = []
    for pool, pid in state["workers"].items():
        if alive(pid):
            terminate(pid)
            stopped.append(f"worker {pool} (pid {pid})")
    if alive(state.get("server_pid")):
        terminate(state["server_pid"])
        stopped.append(f"server {state['url']} (pid {state['server_pid']})")
    pg = folder() / "postgres"
    if postgres.running(pg):
        postgres.stop(pg)
        stopped.append("postgresql")
    state_file().unlink(missing_ok=True)
    return stopped


def status() -> dict[str, Any]:
    """What runs: the URL, the database, the server, and each pool's worker."""
    state = read_state()
    if not state:
        return {"running": False}
    up = alive(state.get("server_pid"))
    return {"running": up and answers(state["url"]), "url": state["url"],
            "ui": state["url"].removesuffix("/api"), "database": state["database"],
            "server_pid": state.get("server_pid"),
            "postgres": postgres.running(folder() / "postgres"),
            "workers": {pool: {"pid": pid, "alive": alive(pid)}
                        for pool, pid in state["workers"].items()},
            "logs": str(folder() / "logs")}
