"""Run progress boards: units, percent that never goes back, summary, rows, watchers."""

from __future__ import annotations

import threading

import pytest

from drover import progress
from drover.clock import ManualClock

NODES = ["lab-cp-1", "lab-cp-2", "lab-worker-1"]


def deploy_board(clock: ManualClock) -> progress.RunProgress:
    return progress.begin("lab", "deploy", clock, NODES, ["image", "provision", "configure",
                                                          "health"],
                          plan={"provision": NODES, "configure": NODES, "health": NODES})


def test_percent_counts_units_done_of_planned_and_summary_names_each_stage_begun() -> None:
    clock = ManualClock()
    board = deploy_board(clock)
    assert (board.percent(), board.summary()) == (0.0, "starting")

    board.stage("image", "running")
    assert board.summary() == "image …"
    board.stage("image", "done")
    for node in NODES:
        board.node(node, "provision", "running")
    board.node("lab-cp-1", "provision", "done")

    # 10 units: image 1, provision 3, configure 3, health 3
    assert board.percent() == 20.0
    assert board.summary() == "image ✓ · provision 1/3"
    board.node("lab-cp-1", "configure", "failed")
    assert board.summary() == "image ✓ · provision 1/3 · configure 0/3 ✗"


def test_a_cluster_stage_done_counts_every_planned_node_of_it() -> None:
    board = deploy_board(ManualClock())
    board.stage("health", "running")
    board.node("lab-cp-1", "health", "done")
    assert board.summary() == "health 1/3"
    board.stage("health", "done")
    assert board.summary() == "health 3/3" and board.percent() == 30.0


def test_percent_never_goes_back_when_a_stage_is_planned_late() -> None:
    board = progress.begin("lab", "upgrade", ManualClock(), NODES, ["upgrade"],
                           plan={"upgrade": NODES[:1]})
    board.node("lab-cp-1", "upgrade", "done")
    assert board.percent() == 100.0
    board.plan("kubernetes", [])  # a late cluster stage: one more unit
    assert board.percent() == 100.0


@pytest.mark.parametrize(("outcome", "percent", "summary"), [
    ("completed", 100.0, "completed: image ✓"),
    ("failed", 10.0, "failed: image ✓"),
])
def test_finish_marks_the_outcome(outcome: str, percent: float, summary: str) -> None:
    board = deploy_board(ManualClock())
    board.stage("image", "done")
    board.finish(outcome)
    assert (board.percent(), board.summary()) == (percent, summary)
    assert progress.current() is None  # an ended board is nobody's current one


def test_rows_give_each_node_its_latest_stage_with_elapsed_time_on_the_clock() -> None:
    clock = ManualClock()
    board = progress.begin("lab", "deploy", clock, NODES, ["image", "provision"], scale=2.0)
    board.stage("image", "running")
    clock.advance(1)
    board.stage("image", "done")
    board.node("lab-cp-1", "provision", "running")
    clock.advance(3)
    board.node("lab-cp-1", "provision", "done")
    board.node("lab-cp-1", "configure", "running")
    clock.advance(0.5)

    assert board.rows() == [
        {"node": "lab", "stage": "image", "state": "done", "elapsed": 2.0},
        {"node": "lab-cp-1", "stage": "configure", "state": "running", "elapsed": 1.0},
        {"node": "lab-cp-2", "stage": "", "state": "waiting", "elapsed": 0.0},
        {"node": "lab-worker-1", "stage": "", "state": "waiting", "elapsed": 0.0},
    ]
    assert board.stages == ["image", "provision", "configure"]


def test_an_unknown_state_is_refused_naming_the_states() -> None:
    board = deploy_board(ManualClock())
    with pytest.raises(ValueError, match="waiting, running, done, failed"):
        board.node("lab-cp-1", "provision", "finished")  # type: ignore[arg-type]


def test_watch_sees_boards_begun_while_open_and_only_then() -> None:
    seen: list[str] = []
    with progress.watch(lambda b: seen.append(b.summary())):
        board = deploy_board(ManualClock())
        board.stage("image", "done")
    board.node("lab-cp-1", "provision", "running")  # the watch is closed
    deploy_board(ManualClock()).stage("image", "running")

    assert seen == ["starting", "image ✓"]


def test_a_failing_listener_does_not_fail_the_run_or_silence_the_others() -> None:
    seen: list[float] = []

    def broken(_: progress.RunProgress) -> None:
        raise RuntimeError("view crashed")

    board = deploy_board(ManualClock())
    board.listen(broken)
    stop = board.listen(lambda b: seen.append(b.percent()))
    board.stage("image", "done")
    stop()
    board.node("lab-cp-1", "provision", "done")
    assert seen == [10.0]


def test_changes_from_many_threads_are_all_counted() -> None:
    nodes = [f"lab-worker-{i}" for i in range(40)]
    board = progress.begin("lab", "deploy", ManualClock(), nodes, ["provision"],
                           plan={"provision": nodes})
    calls: list[int] = []
    board.listen(lambda b: calls.append(1))

    def run(node: str) -> None:
        board.node(node, "provision", "running")
        board.node(node, "provision", "done")

    threads = [threading.Thread(target=run, args=(n,)) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert board.percent() == 100.0 and board.summary() == "provision 40/40"
    assert len(calls) == 80


def test_using_makes_a_board_current_for_the_block_only() -> None:
    board = deploy_board(ManualClock())
    with progress.using(board):
        assert progress.current() is board
    assert progress.current() is None
