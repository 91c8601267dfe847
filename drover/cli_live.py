"""The CLI's live view of the runs it starts in-process: on a terminal, a table per run with
a row per node (stage, state, elapsed) redrawn as it changes and removed when the run is
over (the caller then prints the timing table); elsewhere (CI, pipes), one plain line per
node stage change, with no control codes. Nothing is shown until a run begins a board, so
a flow that fails early leaves the output untouched."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from drover import progress
from drover.timing import format_duration

STYLES = {"waiting": "dim", "running": "yellow", "done": "green", "failed": "bold red"}


def board_view(board: progress.RunProgress) -> Group:
    """A run's board: a title line (percent, summary), then a table with one row per node,
    the cluster's own stage first."""
    title = Text(f"{board.flow} {board.cluster}: {board.percent():.0f}% ({board.summary()})",
                 style="bold")
    table = Table(expand=False)
    for column in ("node", "stage", "state", "elapsed"):
        table.add_column(column, justify="right" if column == "elapsed" else "left")
    for row in board.rows():
        state = str(row["state"])
        elapsed = float(row["elapsed"])  # type: ignore[arg-type]
        table.add_row(str(row["node"]), str(row["stage"]) or "-",
                      f"[{STYLES[state]}]{state}[/]",
                      format_duration(elapsed) if row["stage"] else "-")
    return Group(title, table)


def change_lines(board: progress.RunProgress, seen: dict[tuple[str | None, str], str]) -> list[str]:
    """A plain line for each cell whose state changed since `seen` (which is updated), e.g.
    'lab-cp-1: configure done 3.2s'; a cell seen for the first time as waiting says nothing."""
    lines = []
    for cell in board.cells():
        key = (cell.node, cell.stage)
        if seen.get(key, "waiting") == cell.state:
            continue
        seen[key] = cell.state
        took = f" {format_duration(board.elapsed(cell))}" if cell.state in ("done", "failed") \
            else ""
        lines.append(f"{cell.node or board.cluster}: {cell.stage} {cell.state}{took}")
    return lines


@contextmanager
def live(console: Console, *, auto_refresh: bool = True) -> Iterator[None]:
    """Show every board begun while the context is open on `console` (see the module's
    docstring). `auto_refresh`: on a terminal, also redraw a few times a second, so elapsed
    times move between changes (tests turn it off)."""
    if console.is_terminal:
        with _terminal_view(console, auto_refresh):
            yield
        return
    seen: dict[int, dict[tuple[str | None, str], str]] = {}
    lock = threading.Lock()

    def show(board: progress.RunProgress) -> None:
        with lock:
            for line in change_lines(board, seen.setdefault(id(board), {})):
                console.print(line, markup=False, highlight=False, soft_wrap=True)

    with progress.watch(show):
        yield


@contextmanager
def _terminal_view(console: Console, auto_refresh: bool) -> Iterator[None]:
    boards: list[progress.RunProgress] = []
    lock = threading.RLock()  # Live's constructor renders once, inside `show`
    display: list[Live] = []  # started when the first board begins

    def render() -> RenderableType:
        with lock:
            shown = list(boards)
        return Group(*(board_view(board) for board in shown))

    def show(board: progress.RunProgress) -> None:
        with lock:
            if board not in boards:
                boards.append(board)
            if not display:
                view = Live(get_renderable=render, console=console, transient=True,
                            auto_refresh=auto_refresh, refresh_per_second=4,
                            redirect_stdout=False, redirect_stderr=False)
                view.start()
                display.append(view)
        display[0].refresh()

    try:
        with progress.watch(show):
            yield
    finally:
        with lock:
            started = list(display)
        for view in started:
            view.stop()
