"""Step timing: per node and step on the provider's clock, thread-safe, drained per cluster."""

from __future__ import annotations

import threading

import pytest

from drover import steps
from drover.lab.clock import ManualClock


def test_a_timed_step_records_its_node_start_and_duration_on_the_given_clock():
    clock, recorder = ManualClock(start=100.0), steps.StepRecorder()
    with recorder.timed("c", "c-cp-1", "define", clock):
        clock.advance(0.25)

    assert recorder.drain("c") == [steps.StepTime("c-cp-1", "define", 100.0, 0.25, True)]
    assert recorder.drain("c") == []  # drained: forgotten


def test_a_step_that_raises_is_recorded_as_failed_and_the_error_goes_on():
    clock, recorder = ManualClock(), steps.StepRecorder()
    with pytest.raises(RuntimeError), recorder.timed("c", "n1", "start", clock):
        clock.advance(2)
        raise RuntimeError("virsh start failed")

    [step] = recorder.drain("c")
    assert (step.step, step.seconds, step.ok) == ("start", 2, False)


def test_clusters_are_kept_apart_and_steps_come_back_in_the_order_they_started():
    recorder = steps.StepRecorder()
    recorder.record("a", steps.StepTime("a-2", "start", 5.0, 1.0))
    recorder.record("b", steps.StepTime("b-1", "start", 1.0, 1.0))
    recorder.record("a", steps.StepTime("a-1", "define", 2.0, 1.0))

    assert [s.node for s in recorder.drain("a")] == ["a-1", "a-2"]
    assert [s.node for s in recorder.peek("b")] == ["b-1"]


def test_threads_record_at_once_without_losing_a_step():
    clock, recorder = ManualClock(), steps.StepRecorder()

    def work(i: int) -> None:
        for _ in range(200):
            with recorder.timed("c", f"n{i}", "upload", clock):
                pass

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(recorder.drain("c")) == 8 * 200


def test_totals_and_lines_name_the_slowest_call_of_each_step():
    taken = [steps.StepTime("n1", "define", 0.0, 0.03), steps.StepTime("n2", "define", 0.1, 31.9),
             steps.StepTime("n1", "start", 32.0, 0.3)]

    totals = steps.totals(taken)
    assert list(totals) == ["define", "start"]  # the path's order
    assert totals["define"] == {"calls": 2, "total": pytest.approx(31.93), "max": 31.9,
                                "median": 31.9}
    slow = [line for line in steps.lines(taken) if "slowest" in line]
    assert any(line.startswith("n2") and "define" in line for line in slow)
    assert steps.rows(taken)[0] == {"node": "n1", "step": "define", "started": 0.0,
                                    "seconds": 0.03, "ok": True}


def test_steps_are_also_appended_to_the_file_drover_steps_file_names(tmp_path, monkeypatch):
    out = tmp_path / "steps.jsonl"
    monkeypatch.setenv("DROVER_STEPS_FILE", str(out))
    recorder = steps.StepRecorder()
    recorder.record("c", steps.StepTime("n1", "start", 1.0, 0.5))

    assert '"step": "start"' in out.read_text() and '"cluster": "c"' in out.read_text()
