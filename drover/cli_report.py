"""`drover report CLUSTER [--flow F] [--chart FILE.png]`: the timing history of a cluster's
runs, p50/p95 per flow against that flow's own target and baseline, and the chart of
durations over time (drover.chart)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from drover.cli_common import checked_name, err, fail, known_clusters, out
from drover.errors import DroverError
from drover.home import drover_home
from drover.timing import TIMED_FLOWS, History, RunTiming, format_duration, percentile


def report(cluster: str,
           flow: Annotated[str | None, typer.Option(
               help=f"one flow: {', '.join(TIMED_FLOWS)} (default: every flow)")] = None,
           chart: Annotated[Path | None, typer.Option(
               help="also draw durations over time per flow, with target and baseline lines, "
                    "into this PNG file")] = None) -> None:
    """The timing history of CLUSTER: every run, p50/p95 per flow against its own target and
    baseline, and with --chart a PNG of durations over time."""
    name = checked_name(cluster)
    if flow is not None and flow not in TIMED_FLOWS:
        err.print(f"error: --flow {flow!r}: drover times {', '.join(TIMED_FLOWS)}",
                  highlight=False, markup=False)
        raise typer.Exit(2)
    if chart is not None and chart.suffix.lower() != ".png":
        err.print(f"error: --chart {chart}: the chart is a PNG; give a file name ending in .png",
                  highlight=False, markup=False)
        raise typer.Exit(2)
    try:
        history = History(drover_home() / "history.db")
        known = sorted(set(history.clusters()) | set(known_clusters()))
        if name not in known:
            err.print(f"error: {name}: no such cluster in the timing history; "
                      + (f"known: {', '.join(known)}" if known else "no runs recorded yet"),
                      highlight=False, markup=False)
            raise typer.Exit(2)
        runs = history.runs(name, flow)
    except DroverError as exc:
        raise fail(exc) from None
    if chart is not None:
        _write_chart(runs, chart, name)
    if not runs:
        out.print(f"{name}: no {flow or 'timed'} runs recorded")
        return
    _print_runs(name, flow, runs)


def _write_chart(runs: list[RunTiming], path: Path, cluster: str) -> None:
    from drover.chart import draw_chart  # matplotlib: loaded only when a chart is asked for

    try:
        series = draw_chart(runs, path, title=f"{cluster}: durations per flow")
    except OSError as exc:
        err.print(f"error: --chart {path}: cannot write it: {exc.strerror or exc}",
                  highlight=False, markup=False)
        raise typer.Exit(1) from None
    drawn = ", ".join(f"{len(s.points)} {flow}" for flow, s in series.items()) or "no runs"
    out.print(f"chart: {path} ({drawn})", highlight=False)


def _print_runs(cluster: str, flow: str | None, runs: list[RunTiming]) -> None:
    flows = list(dict.fromkeys(r.flow for r in runs))
    title = f"{flow or ', '.join(flows)} {cluster}: {len(runs)} run(s)"
    table = Table(title=title, title_justify="left")
    for column in ("started", "flow", "outcome", "total", "verdict"):
        table.add_column(column)
    for run in runs:
        started = datetime.fromtimestamp(run.started, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(started, run.flow, run.outcome, format_duration(run.total), run.verdict())
    out.print(table)
    for name in flows:
        mine = [r for r in runs if r.flow == name]
        done = [r.total for r in mine if r.outcome == "completed"]
        if not done:
            continue
        last = mine[-1]
        baseline = ("no baseline" if last.baseline_seconds is None else
                    f"baseline {format_duration(last.baseline_seconds)}"
                    + (f" ({last.baseline_name})" if last.baseline_name else ""))
        out.print(f"{name}: completed runs: p50 {format_duration(percentile(done, 50))}, "
                  f"p95 {format_duration(percentile(done, 95))}; target "
                  f"{format_duration(last.target_seconds)}, {baseline}", highlight=False)
