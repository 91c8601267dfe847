"""The timing chart: each flow's run durations over time, against its target and baseline
lines, drawn with matplotlib (its Agg canvas: no display) into a PNG. `draw_chart` returns
the series it plotted, so what the picture shows can be checked against the history.

Durations are in minutes of real-world time (compressed lab time scaled back up). A
completed run is a dot on the flow's line; a failed or killed one is a cross at the time it
had run; a run still going is left out. Target and baseline are drawn per run, as steps: an
upgrade's grow with the nodes it upgraded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from drover.timing import RunTiming, format_duration

#: PNG metadata left out, so the same runs draw the same bytes whatever matplotlib's version
METADATA = {"Software": None}


@dataclass
class Series:
    """One flow's plotted points: (started, minutes, outcome), and its target and baseline
    in minutes per point (None: that run had no baseline)."""

    flow: str
    points: list[tuple[datetime, float, str]] = field(default_factory=list)
    targets: list[float] = field(default_factory=list)
    baselines: list[float | None] = field(default_factory=list)
    baseline_name: str = ""


def chart_series(runs: Sequence[RunTiming]) -> dict[str, Series]:
    """The runs to plot, per flow in the order flows first appear, each flow's in time order."""
    series: dict[str, Series] = {}
    for run in sorted(runs, key=lambda r: r.started):
        if run.outcome == "running":
            continue
        one = series.setdefault(run.flow, Series(run.flow))
        one.points.append((datetime.fromtimestamp(run.started, UTC), run.total / 60,
                           run.outcome))
        one.targets.append(run.target_seconds / 60)
        one.baselines.append(None if run.baseline_seconds is None
                             else run.baseline_seconds / 60)
        one.baseline_name = run.baseline_name or one.baseline_name
    return series


def _plot(axes: Axes, one: Series) -> None:
    times = [t for t, _, _ in one.points]
    done = [(t, m) for t, m, outcome in one.points if outcome == "completed"]
    other = [(t, m) for t, m, outcome in one.points if outcome != "completed"]
    if done:
        axes.plot(*zip(*done, strict=True), marker="o", color="tab:blue",
                  label="completed run")
    if other:
        axes.plot(*zip(*other, strict=True), linestyle="none", marker="x", color="tab:red",
                  label="failed or killed (not judged)")
    _level(axes, times, one.targets, f"target ({format_duration(one.targets[-1] * 60)})",
           linestyle="--", color="tab:green")
    if any(b is not None for b in one.baselines):
        baselines = [float("nan") if b is None else b for b in one.baselines]
        name = f"{one.baseline_name} baseline" if one.baseline_name else "baseline"
        last = next(b for b in reversed(one.baselines) if b is not None)
        _level(axes, times, baselines, f"{name} ({format_duration(last * 60)})",
               linestyle=":", color="tab:orange")
    highest = max([m for _, m, _ in one.points] + one.targets
                  + [b for b in one.baselines if b is not None])
    axes.set_title(f"{one.flow}: {len(one.points)} run(s)", loc="left")
    axes.set_ylabel("minutes")
    axes.set_ylim(0, highest * 1.15 or 1)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")


def _level(axes: Axes, times: list[datetime], values: list[float], label: str,
           **style: str) -> None:
    """A target or baseline: one line across the panel when it never changed, else a step
    per run."""
    if len(set(values)) == 1:
        axes.axhline(values[0], label=label, **style)
    else:
        axes.step(times, values, where="post", label=label, **style)


def render_chart(runs: Sequence[RunTiming], title: str = "") -> tuple[bytes, dict[str, Series]]:
    """The chart as PNG bytes, and the series plotted (one panel per flow)."""
    series = chart_series(runs)
    panels = max(1, len(series))
    # a Figure of its own on the Agg canvas, not pyplot: no display, no global state shared
    # by flows charting in several threads at once
    figure = Figure(figsize=(9, 3.2 * panels), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.subplots(panels, 1, sharex=True, squeeze=False)
    if not series:
        grid[0][0].text(0.5, 0.5, "no finished runs recorded", ha="center", va="center")
        grid[0][0].set_axis_off()
    for row, one in zip(grid, series.values(), strict=False):
        _plot(row[0], one)
    times = [t for one in series.values() for t, _, _ in one.points]
    if times and max(times) - min(times) < timedelta(hours=1):  # else the axis spans years
        middle = min(times) + (max(times) - min(times)) / 2
        grid[0][0].set_xlim(middle - timedelta(hours=1), middle + timedelta(hours=1))
    if title:
        figure.suptitle(title)
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata=METADATA)
    return buffer.getvalue(), series


def draw_chart(runs: Sequence[RunTiming], path: Path | str,
               title: str = "") -> dict[str, Series]:
    """Write the chart of `runs` to `path` (PNG); returns the series it plotted."""
    png, series = render_chart(runs, title)
    Path(path).write_bytes(png)
    return series
