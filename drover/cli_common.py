"""What every `drover` command shares: the consoles, the global options (-v shows Prefect's
log lines, --debug a traceback), running a flow in this process, the names of what exists
(an unknown cluster, node or flow is refused with them before Prefect starts), and turning
drover's errors into one line and an exit code (2: usage, config or unknown name; 1: failed)."""

from __future__ import annotations

import importlib
import logging
import os
import re
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from drover.boundaries import cluster_name, shown
from drover.errors import DroverError, InvalidName, NodeNotFound, SpecError
from drover.home import known_clusters

if TYPE_CHECKING:
    from drover.spec import ClusterSpec

out = Console(soft_wrap=True)  # summary lines stay whole: a terminal wraps them, not rich
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole, for grep and CI logs

Wait = Annotated[float | None, typer.Option(
    "--wait", metavar="SECONDS",
    help="if another operation holds the cluster, wait up to SECONDS (default: fail at once)")]
CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
HIDDEN = "CRITICAL"  # what Prefect's console handler still shows by default (nothing it logs)


@dataclass
class Options:
    """The global options, set by the app's callback before any command runs."""

    verbose: bool = False
    debug: bool = False


options = Options()


def set_options(verbose: bool, debug: bool) -> None:
    options.verbose, options.debug = verbose, debug


def prefect_env() -> None:
    """Before Prefect is imported: its console log lines hidden unless -v (they still reach
    the API, so the UI shows them), no telemetry (it only adds SQLite lock noise), a running
    `drover server` used when there is one (runs show in its UI), else Prefect's temporary
    server, said once, with time to start on a busy machine."""
    if options.verbose:
        os.environ[CONSOLE_LEVEL] = "NOTSET"
    elif os.environ.get(CONSOLE_LEVEL) in (None, "NOTSET"):
        os.environ[CONSOLE_LEVEL] = HIDDEN
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


def quiet_console() -> None:
    """Give Prefect's console handlers (already configured when Prefect was imported earlier
    in this process) the level prefect_env chose."""
    level = logging.getLevelName(os.environ.get(CONSOLE_LEVEL, "NOTSET"))
    for name in (None, "uvicorn", "fastapi"):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.setLevel(level if isinstance(level, int) else logging.CRITICAL)


def print_table(table: Table) -> None:
    """Print `table` whole: off a terminal (a pipe, CI) as wide as its cells need, never
    truncated to 80 columns."""
    if out.is_terminal:
        out.print(table)
        return
    from rich.measure import Measurement

    wide = Measurement.get(out, out.options.update(width=1000), table).maximum
    Console(file=out.file, width=max(out.width, wide), no_color=out.no_color).print(table)


def fail(exc: BaseException, code: int = 1) -> typer.Exit:
    """Print `exc` as one error line (a SpecError as one line per problem; anything but a
    drover error named as unexpected; with --debug the traceback first); the Exit to raise.
    Config and usage errors (SpecError, InvalidName, other ValueErrors) exit 2, others
    `code`."""
    if options.debug:
        err.print("".join(traceback.format_exception(exc)), end="", highlight=False,
                  markup=False)
    if isinstance(exc, SpecError):
        err.print(f"error: {exc.source}: {len(exc.issues)} problem(s):", highlight=False,
                  markup=False)
        for issue in exc.issues:
            err.print(f"  {exc.source}: {issue}", highlight=False, markup=False)
        return typer.Exit(2)
    message = str(exc) if isinstance(exc, (DroverError, ValueError)) else (
        f"unexpected {type(exc).__name__}: {exc}"
        + ("" if options.debug else " (`drover --debug ...` shows where)"))
    err.print("error:", style="red", end=" ", highlight=False)
    err.print(message, highlight=False, markup=False)
    return typer.Exit(2 if isinstance(exc, ValueError) else code)


class DroverGroup(TyperGroup):
    """The `drover` command group: an error that no command caught ends the command as one
    line and an exit code, never as a traceback (unless --debug): a drover error as itself,
    anything else (a bug, a Prefect API gone away) named as unexpected, exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own: usage errors, exits
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except Exception as exc:
            raise fail(exc) from None


class PlanLines(logging.Handler):
    """Prints the plan lines a flow logs before it acts ('lab: will create lab-cp-1 ...'),
    while Prefect's own lines are hidden: what is about to happen is never a surprise."""

    PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*: will ")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.PATTERN.match(message):
            out.print(message, highlight=False, markup=False)


@contextmanager
def plan_lines() -> Iterator[None]:
    """Show the flow run's plan lines (PlanLines) while open, unless -v shows every line."""
    if options.verbose:
        yield
        return
    handler, logger = PlanLines(logging.INFO), logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def run_flow(flow_module: str, flow_name: str, view: AbstractContextManager[Any] | None = None,
             **parameters: Any) -> Any:
    """Run one of drover's flows in this process (inside `view`, the live view, if given;
    its plan lines printed); drover's own errors end the command."""
    prefect_env()
    flow = getattr(importlib.import_module(flow_module), flow_name)
    quiet_console()
    try:
        with plan_lines(), view or nullcontext():
            return flow(**parameters)
    except (DroverError, ValueError) as exc:
        raise fail(exc) from None


def live_view() -> AbstractContextManager[Any]:
    """The live view per node (drover.cli_live, on stderr) while a flow deploys, upgrades or
    replaces; none with -v (Prefect's log lines show instead)."""
    if options.verbose:
        return nullcontext()
    from drover.cli_live import live

    return live(err)


def busy(wait: float | None) -> dict[str, Any]:
    """The flows' if_busy/wait_seconds parameters from --wait."""
    return {"if_busy": "fail"} if wait is None else {"if_busy": "wait", "wait_seconds": wait}


def checked_name(cluster: str) -> str:
    """A cluster name from the command line, checked before anything runs (exit 2)."""
    try:
        return cluster_name(cluster)
    except InvalidName as exc:
        raise fail(exc) from None


def unknown_cluster(cluster: str, hint: str = "deploy one with drover deploy CONFIG"
                    ) -> typer.Exit:
    """The Exit (2) for a cluster drover does not know, naming the ones it does."""
    known = known_clusters()
    return fail(NodeNotFound(
        f"{cluster}: drover knows no such cluster; "
        + (f"known: {', '.join(known)}" if known else "it knows none yet") + f" ({hint})"),
        code=2)


def known_cluster(cluster: str) -> str:
    """A checked cluster name that drover remembers, else exit 2 naming the known ones;
    parses no spec (destroy must work on a cluster whose file broke)."""
    name = checked_name(cluster)
    if name not in known_clusters():
        raise unknown_cluster(name)
    return name


def known_spec(cluster: str) -> ClusterSpec:
    """The remembered spec of a cluster drover deployed, else exit 2 naming the known ones."""
    from drover.home import remembered_spec

    name = checked_name(cluster)
    try:
        spec = remembered_spec(name)
    except DroverError as exc:
        raise fail(exc) from None
    if spec is None:
        raise unknown_cluster(name)
    return spec


def known_node(spec: ClusterSpec, node: str) -> str:
    """`node` (full name, or the part after the cluster's name) if the cluster has it now,
    else exit 2 naming its nodes."""
    from drover.deploy import Infra, observe
    from drover.plan import natural

    try:
        nodes = sorted(observe(Infra.open(spec)).nodes, key=natural)
    except DroverError as exc:
        raise fail(exc) from None
    for name in (node, f"{spec.name}-{node}"):  # lab-worker-2 may be called worker-2
        if name in nodes:
            return name
    raise fail(NodeNotFound(
        f"{spec.name}: no node {shown(node)} (never there, or replaced already); its nodes: "
        + (", ".join(nodes) or "none")), code=2)

