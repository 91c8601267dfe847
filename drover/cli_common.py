"""What every `drover` command shares: the consoles, running a flow in this process, and
turning drover's errors into one line and an exit code (2: usage or config, 1: failed)."""

from __future__ import annotations

import importlib
import os
from typing import Annotated, Any

import typer
from rich.console import Console

from drover.boundaries import cluster_name
from drover.errors import DroverError, InvalidName, SpecError

out = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole, for grep and CI logs

Wait = Annotated[float | None, typer.Option(
    "--wait", metavar="SECONDS",
    help="if another operation holds the cluster, wait up to SECONDS (default: fail at once)")]


def prefect_env() -> None:
    """Before Prefect is imported: no telemetry (it only adds SQLite lock noise), a running
    `drover server` used when there is one (runs show in its UI), else Prefect's temporary
    server, said once, with time to start on a busy machine."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if os.environ.get("PREFECT_API_URL"):
        return
    from drover import server

    url = server.api_url()
    if url:
        os.environ["PREFECT_API_URL"] = url
    else:
        err.print("no drover server running: using a temporary Prefect server "
                  "(`drover server start` keeps one, and shows the runs in its UI)",
                  highlight=False)


def fail(exc: Exception, code: int = 1) -> typer.Exit:
    """Print `exc` as one error line (a SpecError as one line per problem); the Exit to raise.
    Config and usage errors (SpecError, InvalidName, other ValueErrors) exit 2."""
    if isinstance(exc, SpecError):
        err.print(f"[red]error:[/red] {exc.source}: {len(exc.issues)} problem(s):", highlight=False)
        for issue in exc.issues:
            err.print(f"  {exc.source}: {issue}", highlight=False, markup=False)
        return typer.Exit(2)
    err.print("[red]error:[/red] ", end="", highlight=False)
    err.print(str(exc), highlight=False, markup=False)
    return typer.Exit(2 if isinstance(exc, ValueError) else code)


def run_flow(flow_module: str, flow_name: str, **parameters: Any) -> Any:
    """Run one of drover's flows in this process; drover's own errors end the command."""
    prefect_env()
    flow = getattr(importlib.import_module(flow_module), flow_name)
    try:
        return flow(**parameters)
    except (DroverError, ValueError) as exc:
        raise fail(exc) from None


def busy(wait: float | None) -> dict[str, Any]:
    """The flows' if_busy/wait_seconds parameters from --wait."""
    return {"if_busy": "fail"} if wait is None else {"if_busy": "wait", "wait_seconds": wait}


def checked_name(cluster: str) -> str:
    """A cluster name from the command line, checked before anything runs (exit 2)."""
    try:
        return cluster_name(cluster)
    except InvalidName as exc:
        raise fail(exc) from None
