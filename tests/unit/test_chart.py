"""drover.chart: a valid PNG of each flow's durations over time, whose plotted points are the
recorded runs, against each run's own target and baseline."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from matplotlib import image

from drover.chart import draw_chart, render_chart
from drover.timing import History, RunTiming

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_700_000_000.0


def recorded_runs(path: Path) -> list[RunTiming]:
    """A history as flows leave it: deploys (one failed, one still running), upgrades whose
    target grows with the nodes, a replace with no baseline; read back from SQLite."""
    history = History(path)
    for i, minutes in enumerate((7, 8, 6)):
        history.record(RunTiming("lab", "deploy", T0 + i * 3600, T0 + i * 3600 + minutes * 60,
                                 "completed", baseline_name="Kubespray cluster.yml"))
    history.record(RunTiming("lab", "deploy", T0 + 4 * 3600, T0 + 4 * 3600 + 90, "failed"))
    history.begin(RunTiming("lab", "deploy", T0 + 5 * 3600))
    for i, nodes in enumerate((3, 5)):
        history.record(RunTiming("lab", "upgrade", T0 + 600 + i * 7200,
                                 T0 + 600 + i * 7200 + 240 * nodes, "completed",
                                 target_seconds=180 * nodes, baseline_seconds=300 * nodes,
                                 baseline_name="Kubespray upgrade-cluster.yml"))
    history.record(RunTiming("lab", "replace", T0 + 900, T0 + 900 + 300, "completed",
                             baseline_seconds=None))
    return history.runs("lab")


def test_the_chart_is_a_valid_png_with_a_panel_per_flow(tmp_path):
    runs = recorded_runs(tmp_path / "history.db")

    draw_chart(runs, tmp_path / "chart.png", title="lab")

    data = (tmp_path / "chart.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    pixels = image.imread(tmp_path / "chart.png")
    assert pixels.shape[0] == 3 * 320 and pixels.shape[1] == 900  # 3 flows, 3.2 in each
    assert pixels.std() > 0  # something is drawn


def test_the_plotted_points_are_the_recorded_runs_that_finished(tmp_path):
    runs = recorded_runs(tmp_path / "history.db")

    series = draw_chart(runs, tmp_path / "chart.png")

    assert list(series) == ["deploy", "upgrade", "replace"]
    finished = [r for r in runs if r.outcome != "running"]
    for flow, one in series.items():
        mine = [r for r in finished if r.flow == flow]
        assert one.points == [(datetime.fromtimestamp(r.started, UTC), r.total / 60, r.outcome)
                              for r in mine]
        assert one.targets == [r.target_seconds / 60 for r in mine]
    assert [m for _, m, _ in series["deploy"].points] == [7, 8, 6, 1.5]
    assert series["upgrade"].targets == [9, 15]       # the target grew with the nodes
    assert series["upgrade"].baselines == [15, 25]
    assert series["upgrade"].baseline_name == "Kubespray upgrade-cluster.yml"
    assert series["replace"].baselines == [None]


def test_the_same_runs_draw_the_same_bytes(tmp_path):
    runs = recorded_runs(tmp_path / "history.db")

    assert render_chart(runs)[0] == render_chart(runs)[0]


def test_no_runs_still_draw_a_chart_saying_so(tmp_path):
    series = draw_chart([], tmp_path / "empty.png")

    assert series == {}
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)
