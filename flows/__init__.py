"""Prefect flows: each file one flow that reads as an ordered list of task calls."""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from drover.boundaries import cluster_name
from drover.deploy import Infra
from drover.errors import NodeNotFound
from drover.home import drover_home, remembered_spec
from drover.spec import ClusterSpec
from drover.timing import History, RunTiming, StageTimer


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
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    return results


def run_parallel(task: Task[..., Any], calls: dict[str, dict[str, Any]],
                 max_workers: int) -> dict[str, Any]:
    """Run `task` once per named set of parameters, at most `max_workers` at a time.

    The bound comes from Prefect's own thread-pool task runner; results come back
    by name, or the first failure is raised once every run has finished.
    """
    with ThreadPoolTaskRunner(max_workers=max_workers) as runner:
        return gather({name: runner.submit(task, parameters=params)
                       for name, params in calls.items()})


def known_spec(cluster: str) -> ClusterSpec:
    """The spec drover deployed `cluster` with, or a clear error naming the fix; the name is
    checked first (a flow parameter, an event's payload: anything may arrive here)."""
    spec = remembered_spec(cluster_name(cluster))
    if spec is None:
        raise NodeNotFound(f"{cluster}: drover knows no such cluster in $DROVER_HOME; deploy it "
                           "first (drover deploy CONFIG)")
    return spec


def start_timer(spec: ClusterSpec, flow_name: str) -> StageTimer:
    """A stage timer for this flow run, on the clock of the cluster's infrastructure; the run
    is in the history from its start, so a run killed on the way still leaves a record."""
    provider = Infra.open(spec).provider
    scale, note = provider.timing_scale()
    settings = spec.spec.deployment
    run = RunTiming(spec.name, flow_name, provider.clock.now(), run_id=str(flow_run.id),
                    target_seconds=settings.target_minutes * 60,
                    baseline_seconds=settings.baseline_minutes * 60, scale=scale,
                    clock_note=note)
    History(drover_home() / "history.db").begin(run)
    return StageTimer(run, provider.clock)
