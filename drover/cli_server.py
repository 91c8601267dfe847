"""`drover server start|stop|status`: drover's own Prefect server on 127.0.0.1 (SQLite, or
PostgreSQL with --postgres), the deployments of prefect.yaml, and a worker per work pool:
drover-local and each site pool of the fleet file. The CLI's flows then run against it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drover.cli_common import err, fail, out
from drover.errors import DroverError

server_app = typer.Typer(help="drover's local Prefect server, its workers and database.",
                         no_args_is_help=True)


def find_project(start: Path) -> Path:
    """The nearest folder holding prefect.yaml, from `start` up; else drover's checkout."""
    for folder in (start, *start.parents):
        if (folder / "prefect.yaml").is_file():
            return folder
    return Path(__file__).resolve().parents[1]


def print_status(state: dict) -> None:
    if not state.get("running"):
        out.print("drover server: not running (flows use a temporary Prefect server; "
                  "`drover server start` keeps one)", highlight=False)
        return
    out.print(f"drover server: {state['url']} (UI {state['ui']}), database "
              f"{state['database']}, pid {state['server_pid']}", highlight=False)
    for pool, worker in state["workers"].items():
        health = "running" if worker["alive"] else "[red]stopped[/red]"
        out.print(f"  worker {pool}: {health} (pid {worker['pid']})", highlight=False)
    out.print(f"  logs: {state['logs']}", highlight=False)


@server_app.command()
def start(postgres: Annotated[bool, typer.Option(
              help="PostgreSQL instead of SQLite (Debian's postgresql; $DROVER_POSTGRES_URL "
                   "names one of your own)")] = False,
          fleet: Annotated[Path | None, typer.Option(
              help="fleet YAML whose site work pools get a worker each "
                   "[default: configs/fleet.yaml when present]")] = None,
          project: Annotated[Path | None, typer.Option(
              help="folder with prefect.yaml [default: nearest one up from here]")] = None,
          port: Annotated[int | None, typer.Option(help="API port [default: a free one]")] = None,
          ) -> None:
    """Start the server, register the deployments and start a worker per work pool."""
    from drover import server
    from drover.fleet import load_fleet

    project = (project or find_project(Path.cwd())).resolve()
    try:
        fleet_file = fleet or (project / "configs" / "fleet.yaml")
        pools = load_fleet(fleet_file).work_pools() if fleet or fleet_file.exists() else []
        err.print("starting the Prefect server, workers and deployments ...", highlight=False)
        print_status(server.start(project, use_postgres=postgres, site_pools=pools, port=port))
    except DroverError as exc:
        raise fail(exc) from None


@server_app.command()
def stop() -> None:
    """Stop the workers, the server and drover's PostgreSQL (their data is kept)."""
    from drover import server

    try:
        stopped = server.stop()
    except DroverError as exc:
        raise fail(exc) from None
    out.print("stopped: " + ", ".join(stopped) if stopped else "nothing was running",
              highlight=False)


@server_app.command()
def status() -> None:
    """The server's URL, its database, and each worker; exit 1 when it is not running."""
    from drover import server

    try:
        state = server.status()
    except DroverError as exc:
        raise fail(exc) from None
    print_status(state)
    if not state.get("running"):
        raise typer.Exit(1)
