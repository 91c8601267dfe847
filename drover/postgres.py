"""A PostgreSQL of drover's own for the Prefect server: Debian's postgresql binaries
(initdb, pg_ctl) on a data folder under $DROVER_HOME/server/postgres, listening on 127.0.0.1
only, password auth (scram) for one role whose password is made up here and kept in a 0600
file with the connection URL. PostgreSQL refuses to run as root; as root it runs inside a user
namespace (`unshare --user --map-user`) so its files stay root's and the folder stays 0700."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

from drover.errors import StateError
from drover.files import write_private
from drover.statefile import private_dir, read_private

ROLE = "drover"
DATABASE = "prefect"


def pg_bin(tool: str) -> str:
    """Path of a PostgreSQL server tool: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(tool)
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found or versions:
        return found or str(versions[-1])
    raise StateError(f"{tool} not found: PostgreSQL's server is not installed; on Debian "
                     "run `apt-get install postgresql` (drover only needs its binaries)")


def as_owner(command: list[str]) -> list[str]:
    """`command` as this user, or for root inside a user namespace where it is not root."""
    if os.geteuid() != 0:
        return command
    if not shutil.which("unshare"):
        raise StateError("PostgreSQL refuses to run as root and `unshare` (util-linux) is "
                         "missing; install util-linux, or run drover as an unprivileged user")
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000", *command]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(as_owner(command), capture_output=True, text=True, check=False,
                            timeout=120)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        where = f"; its log: {log}" if log else ""
        raise StateError(f"PostgreSQL {what} failed (exit {result.returncode}): "
                         f"{' / '.join(tail)[:400]}{where}")


def start(folder: Path) -> str:
    """Start (initialising on first use) the PostgreSQL in `folder`; its Prefect database URL.

    $DROVER_POSTGRES_URL, when set, names a database someone else runs: nothing is started.
    """
    if url := os.environ.get("DROVER_POSTGRES_URL"):
        return url
    folder = private_dir(folder)
    data, url_file = folder / "data", folder / "url"
    if not (data / "PG_VERSION").exists():
        password = secrets.token_urlsafe(24)
        pwfile = write_private(folder / ".initpw", password + "\n")
        try:
            run([pg_bin("initdb"), "-D", str(data), "-U", ROLE, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        port = free_port()
        write_private(url_file, f"postgresql+asyncpg://{ROLE}:{password}@127.0.0.1:{port}/"
                                f"{DATABASE}\n")
        fresh = True
    else:
        fresh = False
    url = read_private(url_file, "database URL").strip()
    port = url.rsplit(":", 1)[1].split("/")[0]
    if not running(folder):
        log = folder / "postgres.log"
        run([pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
             f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c max_connections=200",
             "start"], "start", log)
    if fresh:
        create_database(url)
    return url


def create_database(url: str) -> None:
    """CREATE DATABASE prefect, through the socket-free TCP listener and the role's password."""
    import asyncio

    import asyncpg  # Prefect's own PostgreSQL driver

    dsn = url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    asyncio.run(create())


def running(folder: Path) -> bool:
    """True when the postmaster of `folder`'s data is alive (its pid file names a live pid)."""
    pid_file = folder / "data" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def stop(folder: Path) -> None:
    """Stop the PostgreSQL of `folder` (fast shutdown: sessions closed, data kept)."""
    if running(folder):
        run([pg_bin("pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "-w", "stop"], "stop")
