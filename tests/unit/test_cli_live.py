"""The CLI's live view: plain lines off a terminal, a transient table on one, silence when no
run begins."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from drover import progress
from drover.cli_live import board_view, live
from drover.clock import ManualClock

NODES = ["lab-cp-1", "lab-worker-1"]


def run_deploy(clock: ManualClock) -> progress.RunProgress:
    board = progress.begin("lab", "deploy", clock, NODES, ["image", "provision", "configure"],
                           plan={"provision": NODES, "configure": NODES})
    board.stage("image", "running")
    clock.advance(0.4)
    board.stage("image", "done")
    for node in NODES:
        board.node(node, "provision", "running")
    clock.advance(2)
    board.node("lab-cp-1", "provision", "done")
    board.node("lab-cp-1", "configure", "running")
    clock.advance(3.2)
    board.node("lab-cp-1", "configure", "done")
    board.node("lab-worker-1", "provision", "failed")
    board.finish("failed")
    return board


def test_off_a_terminal_each_node_stage_change_is_one_plain_line() -> None:
    out = StringIO()
    with live(Console(file=out, force_terminal=False, width=100)):
        run_deploy(ManualClock())

    assert out.getvalue().splitlines() == [
        "lab: image running",
        "lab: image done 0.4s",
        "lab-cp-1: provision running",
        "lab-worker-1: provision running",
        "lab-cp-1: provision done 2.0s",
        "lab-cp-1: configure running",
        "lab-cp-1: configure done 3.2s",
        "lab-worker-1: provision failed 5.2s",
    ]
    assert "\x1b" not in out.getvalue()


def test_on_a_terminal_a_live_table_per_node_is_drawn_then_removed() -> None:
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    clock = ManualClock()
    with live(console, auto_refresh=False):
        board = progress.begin("lab", "deploy", clock, NODES, ["provision"],
                               plan={"provision": NODES})
        board.node("lab-cp-1", "provision", "running")
        clock.advance(65)
        board.node("lab-worker-1", "provision", "running")
    drawn = out.getvalue()

    assert "lab-cp-1" in drawn and "lab-worker-1" in drawn and "running" in drawn
    assert "1m05s" in drawn and "deploy lab: 0%" in drawn
    assert "\x1b[2K" in drawn  # the live display erased its last frame on the way out


def test_the_table_has_a_row_per_node_and_a_title_with_percent_and_summary() -> None:
    board = run_deploy(ManualClock())
    out = StringIO()
    Console(file=out, width=120, color_system=None).print(board_view(board))
    text = out.getvalue()
    assert "deploy lab: 60% (failed: image ✓ · provision 1/2 ✗ · configure 1/2)" in text
    for line, node in zip(text.splitlines()[4:7], ["lab", "lab-cp-1", "lab-worker-1"],
                          strict=True):
        assert line.split("│")[1].strip() == node


def test_nothing_is_shown_when_no_run_begins() -> None:
    for terminal in (True, False):
        out = StringIO()
        with live(Console(file=out, force_terminal=terminal)):
            pass
        assert out.getvalue() == ""


def test_boards_begun_after_the_view_closed_are_not_shown() -> None:
    out = StringIO()
    with live(Console(file=out, force_terminal=False)):
        pass
    run_deploy(ManualClock())
    assert out.getvalue() == ""
