"""Named tenacity policies: call-level retries and polls, with an injectable clock.

Only TransientError is retried. A call that stays transient through its
policy ends in RetriesExhausted, which is not transient, so Prefect's task
retries (whole steps) never multiply with these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from drover.clock import Clock
from drover.errors import RetriesExhausted, TransientError

T = TypeVar("T")


def _exhausted(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    raise RetriesExhausted(f"{exc} (gave up after {state.attempt_number} attempts)") from exc


def api_call(clock: Clock, attempts: int = 5, max_wait: float = 10.0) -> Retrying:
    """For one API call or command: a few quick, jittered attempts on transient errors."""
    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=max_wait) + wait_random(0, 0.5),
        retry=retry_if_exception_type(TransientError),
        sleep=clock.sleep,
        retry_error_callback=_exhausted,
    )


def call(policy: Retrying, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    return policy(fn, *args, **kwargs)


def poll_until(check: Callable[[], T | None], *, clock: Clock, timeout: float,
               on_timeout: Callable[[], Exception],
               next_change: Callable[[], float | None] = lambda: None,
               interval: float = 5.0) -> T:
    """Call `check` until it returns something other than None, or raise on_timeout().

    Between checks it sleeps until `next_change()` (the lab knows when its next
    change is due), or for `interval` when the backend cannot tell or nothing is
    scheduled (math.inf: nothing changes by itself, but another thread of the run
    may act, a bootstrap say), never past the deadline.
    """
    deadline = clock.now() + timeout
    idle = [False]  # whether the last wait found nothing scheduled

    def wait(_: RetryCallState) -> float:
        now = clock.now()
        upcoming = next_change()
        if upcoming == math.inf and not idle[0]:
            # Nothing scheduled now, but a parallel reader may have applied the change we
            # waited for between our check and this question: look once more before
            # waiting out the deadline.
            idle[0] = True
            return 0.0
        if upcoming != math.inf:
            idle[0] = False
        # Nothing scheduled (inf) or unknown (None): poll at the interval, since another
        # thread of the run (a bootstrap, a join) may cause the change this wait is for.
        target = now + interval if upcoming is None or upcoming == math.inf else upcoming
        return max(0.0, min(target, deadline) - now)

    def give_up(_: RetryCallState) -> T:
        raise on_timeout()

    retrying = Retrying(
        stop=lambda _: clock.now() >= deadline,
        wait=wait,
        retry=retry_if_result(lambda result: result is None),
        sleep=clock.sleep,
        retry_error_callback=give_up,
    )
    return retrying(check)


__all__ = ["api_call", "call", "poll_until"]
