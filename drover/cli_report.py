"""`drover report CLUSTER`: the timing history of a cluster's runs, with p50/p95 against
the target and the baseline."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer
from rich.table import Table

from drover.cli_common import checked_name, fail, out
from drover.errors import DroverError
from drover.home import drover_home
from drover.timing import History, format_duration, percentile


def report(cluster: str, flow: Annotated[str, typer.Option(help="deploy, upgrade, ...")] = "deploy"
           ) -> None:
    """The timing history of CLUSTER: every run, and p50/p95 against target and baseline."""
    try:
        runs = History(drover_home() / "history.db").runs(checked_name(cluster), flow)
    except DroverError as exc:
        raise fail(exc) from None
    if not runs:
        out.print(f"{cluster}: no {flow} runs recorded")
        return
    table = Table(title=f"{flow} {cluster}: {len(runs)} run(s)", title_justify="left")
    for column in ("started", "outcome", "total", "verdict"):
        table.add_column(column)
    from datetime import datetime

    for run in runs:
        started = datetime.fromtimestamp(run.started, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(started, run.outcome, format_duration(run.total), run.verdict())
    out.print(table)
    done = [r.total for r in runs if r.outcome == "completed"]
    if done:
        last = runs[-1]
        out.print(f"completed runs: p50 {format_duration(percentile(done, 50))}, "
                  f"p95 {format_duration(percentile(done, 95))}; target "
                  f"{format_duration(last.target_seconds)}, baseline "
                  f"{format_duration(last.baseline_seconds)}", highlight=False)
