"""run_parallel: every run's result by name, a bound on concurrency, failures surfaced."""

from __future__ import annotations

import threading

import pytest
from prefect import flow, task

from flows import run_parallel

slots = threading.BoundedSemaphore(2)
pairs = threading.Barrier(2, timeout=30)
overfull: list[int] = []


@task
def occupy(i: int) -> int:
    if not slots.acquire(blocking=False):  # a third run at once: the bound did not hold
        overfull.append(i)
        return i
    try:
        pairs.wait()  # two runs meet here, so they really ran at the same time
    finally:
        slots.release()
    return i * 10


@task
def fail_on(i: int, bad: int) -> int:
    if i == bad:
        raise RuntimeError(f"run {i} failed")
    return i


def test_run_parallel_returns_results_by_name_and_keeps_to_the_bound() -> None:
    @flow
    def fan_out() -> dict[str, int]:
        return run_parallel(occupy, {f"n{i}": {"i": i} for i in range(6)}, max_workers=2)

    assert fan_out() == {f"n{i}": i * 10 for i in range(6)}
    assert overfull == []


def test_run_parallel_raises_the_failure_after_every_run_finished() -> None:
    @flow
    def fan_out() -> dict[str, int]:
        return run_parallel(fail_on, {f"n{i}": {"i": i, "bad": 2} for i in range(4)},
                            max_workers=4)

    with pytest.raises(RuntimeError, match="run 2 failed"):
        fan_out()
