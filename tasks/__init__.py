"""Thin Prefect tasks around drover's library: names, retries, timeouts, artifacts."""

from __future__ import annotations

from typing import Any

from drover.errors import is_transient
from tasks import secrets as _secrets  # noqa: F401  (registers the Prefect Secret block resolver)

#: when a step started and ended, on the infrastructure's clock
Span = tuple[float, float]


def span(infra: Any, seconds: float) -> Span:
    """The span of a step that just ended after `seconds` on `infra`'s clock."""
    ended = infra.clock.now()
    return ended - seconds, ended


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """retry_condition_fn: retry a step only when it failed with a TransientError."""
    try:
        state.result()
    except Exception as exc:  # the failure the state holds
        return is_transient(exc)
    return False
