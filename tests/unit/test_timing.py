"""drover.timing: durations, the verdict against target and baseline, stage timers, history."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from drover.lab.clock import ManualClock
from drover.timing import (
    History,
    RunTiming,
    StageTimer,
    StageTiming,
    format_duration,
    percentile,
    verdict,
)


@pytest.mark.parametrize("seconds, text", [
    (0, "0.0s"),
    (-3, "0.0s"),
    (0.04, "0.0s"),
    (5.24, "5.2s"),
    (59.9, "59.9s"),
    (60, "1m"),
    (61, "1m01s"),
    (461, "7m41s"),
    (599.6, "10m"),
    (600, "10m"),
    (2700, "45m"),
    (3599.6, "1h00m"),
    (3600, "1h00m"),
    (3661, "1h01m"),
    (7 * 3600 + 5 * 60, "7h05m"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_duration_rounding_up_to_a_minute_prints_minutes():
    assert format_duration(59.96) == "1m"


@pytest.mark.parametrize("total, target, baseline, text", [
    (461, 600, 2700, "7m41s — within the 10m target; 5.9x faster than the 45m baseline"),
    (600, 600, 2700, "10m — within the 10m target; 4.5x faster than the 45m baseline"),
    (700, 600, 2700, "11m40s — over the 10m target by 1m40s; 3.9x faster than the 45m baseline"),
    (3000, 600, 2700, "50m — over the 10m target by 40m; no faster than the 45m baseline"),
    (0, 600, 2700, "0.0s — within the 10m target; the 45m baseline does not apply to an "
                   "instant run"),
])
def test_verdict(total, target, baseline, text):
    assert verdict(total, target, baseline) == text


def timed_run(scale: float = 1.0) -> RunTiming:
    """A deploy timed on a ManualClock: provision 40 s (slowest cp-2), configure 100 s."""
    clock = ManualClock(start=5000.0)
    timer = StageTimer(RunTiming("lab", "deploy", clock.now(), scale=scale,
                                 clock_note="lab, realistic profile compressed 60x"), clock)
    with timer.stage("provision") as stage:
        clock.advance(40)
        timer.nodes(stage, {"lab-cp-1": 31.0, "lab-cp-2": 40.0, "lab-worker-1": 35.5})
    with timer.stage("configure") as stage:
        clock.advance(100)
        timer.nodes(stage, {"lab-cp-1": 97.0, "lab-worker-1": 100.0})
    with timer.stage("bootstrap"):
        clock.advance(5)
    return timer.finish("completed")


def test_stage_timer_records_each_stage_on_the_clock():
    run = timed_run()

    assert [(s.name, s.seconds, s.nodes) for s in run.stages] == [
        ("provision", 40.0, 3), ("configure", 100.0, 2), ("bootstrap", 5.0, 0)]
    assert (run.started, run.ended, run.total, run.outcome) == (5000.0, 5145.0, 145.0,
                                                                "completed")


def test_stage_timer_keeps_the_slowest_node_of_each_stage():
    run = timed_run()

    assert [(s.slowest_node, s.slowest_seconds) for s in run.stages] == [
        ("lab-cp-2", 40.0), ("lab-worker-1", 100.0), (None, None)]


def test_critical_path_chains_the_slowest_nodes_through_the_stages():
    assert timed_run().critical_path() == (
        "provision: lab-cp-2 40.0s → configure: lab-worker-1 1m40s")
    assert RunTiming("lab", "deploy", 0.0).critical_path() == "-"


def test_stage_is_recorded_even_when_it_fails():
    clock = ManualClock(start=0.0)
    timer = StageTimer(RunTiming("lab", "deploy", 0.0), clock)

    with pytest.raises(RuntimeError), timer.stage("health"):
        clock.advance(12)
        raise RuntimeError("boom")
    run = timer.finish("failed")

    assert [(s.name, s.seconds) for s in run.stages] == [("health", 12.0)]
    assert run.outcome == "failed"


def test_scale_multiplies_every_reported_duration():
    run = timed_run(scale=60)

    assert run.total == 145 * 60
    assert run.rows()[0] == {"stage": "provision", "duration": "40m", "nodes": "3",
                             "slowest node": "lab-cp-2 (40m)"}
    assert run.rows()[-1]["duration"] == "2h25m"
    assert run.critical_path() == "provision: lab-cp-2 40m → configure: lab-worker-1 1h40m"
    assert run.verdict().startswith("2h25m — over the 10m target by 2h15m")


def test_markdown_report_carries_the_verdict_the_table_and_the_clock_note():
    text = timed_run().markdown()

    assert text.startswith("# deploy lab: completed\n\n**2m25s — within the 10m target**; "
                           "18.6x faster than the 45m baseline")
    assert "| configure | 1m40s | 2 | lab-worker-1 (1m40s) |" in text
    assert "| bootstrap | 5.0s | — | — |" in text  # a lone "-" would render as a bullet
    assert "| total | 2m25s |   |   |" in text
    assert text.rstrip().endswith("_Times: lab, realistic profile compressed 60x._")


def test_history_round_trips_runs_and_filters_by_cluster_and_flow(tmp_path):
    history = History(tmp_path / "history.db")
    deploy, upgrade = timed_run(), RunTiming("lab", "upgrade", 9000.0, 9300.0, "failed")
    other = RunTiming("other", "deploy", 100.0, 200.0, "completed", scale=60.0,
                      stages=[StageTiming("provision", 100.0, 200.0, 2, "other-cp-1", 90.0)])
    for run in (deploy, other, upgrade):
        history.record(run)

    reopened = History(tmp_path / "history.db")

    assert reopened.runs("lab") == [deploy, upgrade]
    assert reopened.runs("lab", "upgrade") == [upgrade]
    assert reopened.runs("other") == [other]
    assert reopened.runs("other")[0].total == 6000.0
    assert reopened.runs("missing") == []


@pytest.mark.parametrize("values, pct, expected", [
    ([7.0], 95, 7.0),
    ([10, 20, 30, 40, 50], 50, 30.0),
    ([10, 20, 30, 40, 50], 95, 48.0),
    ([50, 10, 40, 20, 30], 50, 30.0),  # order does not matter
    ([100, 200], 50, 150.0),
])
def test_percentile(values, pct, expected):
    assert percentile(values, pct) == pytest.approx(expected)


# --- every run leaves a record, and only completed runs are judged ---------------------------

@pytest.mark.parametrize("outcome, stages, text", [
    ("failed", [], "failed after 3m12s — not judged against the target"),
    ("running", [], "still running — not judged against the target"),
    ("killed", [StageTiming("provision", 0.0, 100.0)],
     "killed after at least 1m40s — not judged against the target"),
    ("killed", [], "killed — not judged against the target"),
])
def test_a_run_that_did_not_complete_is_never_within_the_target(outcome, stages, text):
    run = RunTiming("lab", "deploy", 0.0, 192.0 if outcome == "failed" else 0.0, outcome,
                    stages=stages)
    assert run.verdict() == text
    assert "within" not in run.markdown()


def test_begin_then_record_leaves_one_row_with_the_outcome(tmp_path):
    history = History(tmp_path / "history.db")
    run = RunTiming("lab", "deploy", 100.0)

    run_id = history.begin(run)
    assert run.run_id == run_id
    assert [r.outcome for r in history.runs("lab")] == ["running"]  # this process: alive
    run.ended, run.outcome = 160.0, "failed"
    history.record(run)

    assert [(r.run_id, r.outcome, r.total) for r in history.runs("lab")] == [
        (run_id, "failed", 60.0)]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_whose_process_is_gone_reads_as_killed(tmp_path):
    history = History(tmp_path / "history.db")
    history.begin(RunTiming("lab", "deploy", 100.0, run_id="r1"))
    with sqlite3.connect(tmp_path / "history.db") as con:
        con.execute("UPDATE runs SET pid=? WHERE run_id='r1'", (dead_pid(),))

    [run] = history.runs("lab")
    assert (run.outcome, run.verdict()) == ("killed", "killed — not judged against the target")


def test_a_run_begun_over_a_day_ago_reads_as_killed_whatever_its_pid(tmp_path):
    wall = [1_000_000.0]
    history = History(tmp_path / "history.db", wall=lambda: wall[0])
    history.begin(RunTiming("lab", "deploy", 100.0))
    assert history.runs("lab")[0].outcome == "running"
    wall[0] += 24 * 3600 + 1
    assert history.runs("lab")[0].outcome == "killed"


def test_a_history_made_before_runs_were_begun_is_migrated(tmp_path):
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, cluster TEXT, "
                    "flow TEXT, started REAL, outcome TEXT, total REAL, record TEXT)")
    path.chmod(0o600)
    old = timed_run()
    History(path).record(old)

    history = History(path)
    history.begin(RunTiming("lab", "deploy", 9000.0, run_id="new"))
    assert [r.outcome for r in history.runs("lab")] == ["completed", "running"]
