"""drover.retry: call-level retries and polls, timed on an injected ManualClock (no real sleep)."""

from __future__ import annotations

import math

import pytest

from drover.errors import RetriesExhausted, TalosError, TransientError
from drover.lab.clock import ManualClock
from drover.retry import api_call, call, poll_until


class Flaky:
    """Fails with the given errors, in order, then returns "ok"; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls += 1
        self.args = (args, kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Never(Exception):
    """Raised by on_timeout in these tests."""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


# ---- api_call ------------------------------------------------------------------------------


def test_api_call_retries_transient_errors_then_succeeds(clock):
    fn = Flaky(TransientError("unavailable"), TransientError("unavailable"))

    result = call(api_call(clock), fn, "lab-cp-1", insecure=True)

    assert result == "ok"
    assert fn.calls == 3
    assert fn.args == (("lab-cp-1",), {"insecure": True})
    # waits 0.5 s then 1 s (exponential), each plus up to 0.5 s of jitter, on the clock
    assert 1.5 <= clock.now() - 1000.0 <= 2.5


def test_api_call_gives_up_with_retries_exhausted_after_its_attempts(clock):
    fn = Flaky(*[TransientError(f"flaky {i}") for i in range(10)])

    with pytest.raises(RetriesExhausted, match=r"flaky 2 \(gave up after 3 attempts\)") as err:
        call(api_call(clock, attempts=3), fn)

    assert fn.calls == 3
    assert not isinstance(err.value, TransientError)  # so no outer retry multiplies it
    assert isinstance(err.value.__cause__, TransientError)


def test_api_call_never_retries_a_non_transient_error(clock):
    fn = Flaky(TalosError("refused"))

    with pytest.raises(TalosError, match="refused"):
        call(api_call(clock), fn)

    assert fn.calls == 1
    assert clock.now() == 1000.0


def test_api_call_waits_are_capped_by_max_wait(clock):
    fn = Flaky(*[TransientError("x") for _ in range(10)])

    with pytest.raises(RetriesExhausted):
        call(api_call(clock, attempts=6, max_wait=0.25), fn)

    # five waits, each at most max_wait plus 0.5 s of jitter
    assert clock.now() - 1000.0 <= 5 * (0.25 + 0.5)
    assert fn.calls == 6


# ---- poll_until -----------------------------------------------------------------------------


def test_poll_until_returns_the_first_result_that_is_not_none(clock):
    answers = iter([None, None, "node-up", "later"])

    result = poll_until(lambda: next(answers), clock=clock, timeout=60, on_timeout=Never,
                        interval=1)

    assert result == "node-up"
    assert next(answers) == "later"  # not called again after the first result


@pytest.mark.parametrize("falsy", [False, 0, "", []])
def test_poll_until_treats_falsy_results_other_than_none_as_done(clock, falsy):
    assert poll_until(lambda: falsy, clock=clock, timeout=60, on_timeout=Never) == falsy
    assert clock.now() == 1000.0


def test_poll_until_sleeps_exactly_until_the_next_change(clock):
    checked_at = []

    def check() -> str | None:
        checked_at.append(clock.now())
        return "done" if len(checked_at) == 3 else None

    poll_until(check, clock=clock, timeout=600, on_timeout=Never,
               next_change=lambda: clock.now() + 7.5, interval=1)

    assert checked_at == [1000.0, 1007.5, 1015.0]


def test_poll_until_raises_on_timeout_at_the_deadline_and_never_sleeps_past_it(clock):
    checked_at = []

    def check() -> None:
        checked_at.append(clock.now())

    with pytest.raises(Never, match="gave up"):
        poll_until(check, clock=clock, timeout=30, on_timeout=lambda: Never("gave up"),
                   next_change=lambda: clock.now() + 100)

    assert clock.now() == 1030.0
    assert checked_at == [1000.0, 1030.0]  # one last look at the deadline itself


def test_poll_until_takes_a_result_that_arrives_exactly_at_the_deadline(clock):
    result = poll_until(lambda: "ready" if clock.now() >= 1030.0 else None, clock=clock,
                        timeout=30, on_timeout=Never, next_change=lambda: math.inf)

    assert result == "ready"
    assert clock.now() == 1030.0


def test_poll_until_with_nothing_due_looks_once_more_then_polls_at_the_interval(clock):
    """Nothing scheduled: another thread of the run may still cause the change (a bootstrap
    the joining nodes wait for), so the wait polls at the interval up to the deadline."""
    calls = []

    with pytest.raises(Never):
        poll_until(lambda: calls.append(clock.now()), clock=clock, timeout=900,
                   on_timeout=Never, next_change=lambda: math.inf, interval=60)

    assert calls == [1000.0, 1000.0, *(1000.0 + 60 * i for i in range(1, 16))]


def test_poll_until_sees_a_change_applied_between_its_check_and_its_wait(clock):
    """Another reader applied the awaited change after our check: nothing is due any more,
    but the condition now holds, so the poll ends at once instead of at the deadline."""
    state = {"applied": False}

    def check() -> str | None:
        return "done" if state["applied"] else None

    def next_change() -> float:
        state["applied"] = True  # the parallel reader got there first
        return math.inf

    assert poll_until(check, clock=clock, timeout=900, on_timeout=Never,
                      next_change=next_change) == "done"
    assert clock.now() == 1000.0


def test_poll_until_waits_interval_when_next_change_is_unknown(clock):
    checked_at = []

    def check() -> str | None:
        checked_at.append(clock.now())
        return "done" if len(checked_at) == 3 else None

    poll_until(check, clock=clock, timeout=600, on_timeout=Never, interval=5)

    assert checked_at == [1000.0, 1005.0, 1010.0]


def test_poll_until_does_not_stretch_the_last_interval_past_the_deadline(clock):
    checked_at = []

    with pytest.raises(Never):
        poll_until(lambda: checked_at.append(clock.now()), clock=clock, timeout=12,
                   on_timeout=Never, interval=5)

    assert checked_at == [1000.0, 1005.0, 1010.0, 1012.0]
