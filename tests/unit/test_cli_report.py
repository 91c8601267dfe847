"""`drover report`: every flow against its own target and baseline, the chart as a PNG of
the recorded runs, and clear exits (2) for an unknown flow or cluster, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib import image
from typer.testing import CliRunner

from drover.cli import app
from drover.home import drover_home
from drover.timing import History, RunTiming

runner = CliRunner()
T0 = 1_700_000_000.0


@pytest.fixture
def history() -> History:
    history = History(drover_home() / "history.db")
    for i, minutes in enumerate((7, 8, 9)):
        history.record(RunTiming("lab", "deploy", T0 + i * 3600, T0 + i * 3600 + minutes * 60,
                                 "completed", baseline_name="Kubespray cluster.yml"))
    history.record(RunTiming("lab", "upgrade", T0 + 9000, T0 + 9000 + 600, "completed",
                             target_seconds=900, baseline_seconds=1500,
                             baseline_name="Kubespray upgrade-cluster.yml"))
    history.record(RunTiming("lab", "replace", T0 + 12000, T0 + 12000 + 17.2, "completed",
                             baseline_seconds=None))
    history.record(RunTiming("other", "deploy", T0, T0 + 60, "completed"))
    return history


def report(*args: str):
    return runner.invoke(app, ["report", *args], terminal_width=250)


def test_each_flow_is_judged_against_its_own_target_and_baseline(history):
    result = report("lab")

    assert result.exit_code == 0, result.output
    assert result.output.count("within the 10m target") == 3
    assert "deploy: completed runs: p50 8m, p95 8m54s; target 10m, baseline 45m " \
           "(Kubespray cluster.yml)" in result.output
    assert "upgrade: completed runs: p50 10m, p95 10m; target 15m, baseline 25m " \
           "(Kubespray upgrade-cluster.yml)" in result.output
    assert "replace: completed runs: p50 17.2s, p95 17.2s; target 10m, no baseline" \
        in result.output
    assert "157" not in result.output  # a replace is not compared with the deploy baseline


def test_one_flow_only(history):
    result = report("lab", "--flow", "upgrade")

    assert result.exit_code == 0, result.output
    assert "upgrade lab: 1 run(s)" in result.output
    assert "deploy" not in result.output


def test_the_chart_is_a_png_of_the_recorded_runs(history, tmp_path: Path):
    chart = tmp_path / "lab.png"

    result = report("lab", "--chart", str(chart))

    assert result.exit_code == 0, result.output
    assert f"chart: {chart} (3 deploy, 1 upgrade, 1 replace)" in result.output
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert image.imread(chart).shape[:2] == (3 * 320, 900)


def test_the_chart_of_one_flow(history, tmp_path: Path):
    chart = tmp_path / "deploy.png"

    result = report("lab", "--flow", "deploy", "--chart", str(chart))

    assert result.exit_code == 0, result.output
    assert f"chart: {chart} (3 deploy)" in result.output
    assert image.imread(chart).shape[:2] == (320, 900)


@pytest.mark.parametrize("args, message", [
    (["lab", "--flow", "destroy"], "--flow 'destroy': drover times deploy, upgrade, replace, "
                                   "recover"),
    (["nope"], "nope: no such cluster in the timing history; known: lab, other"),
    (["lab", "--chart", "lab.svg"], "the chart is a PNG"),
    (["../x"], "../x"),
])
def test_a_wrong_argument_exits_2_naming_what_there_is(history, args, message):
    result = report(*args)

    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


def test_a_chart_that_cannot_be_written_is_one_error_line(history, tmp_path: Path):
    result = report("lab", "--chart", str(tmp_path / "missing" / "lab.png"))

    assert result.exit_code == 1
    assert "cannot write it" in result.output and "Traceback" not in result.output


def test_no_history_at_all_names_no_clusters():
    result = report("lab")

    assert result.exit_code == 2
    assert "no runs recorded yet" in result.output
