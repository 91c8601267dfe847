"""Prefect flows: each file one flow that reads as an ordered list of task calls."""

from __future__ import annotations

from typing import Any

from prefect.futures import PrefectFuture, wait


def gather(futures: dict[str, PrefectFuture[Any]]) -> dict[str, Any]:
    """Wait for every future, then return their results or raise the first failure.

    Every future is resolved with .result() (never only .wait()), so a failed
    task fails the flow; all of them finish first, so nothing runs on unseen.
    """
    wait(list(futures.values()))
    results, errors = {}, []
    for name, future in futures.items():
        try:
            results[name] = future.result()
        except Exception as exc:  # noqa: PERF203 - each failure is kept, the first re-raised
            errors.append(exc)
    if errors:
        raise errors[0]
    return results
