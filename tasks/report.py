"""Task: publish a run's timing as Prefect artifacts and keep it in the history."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from drover import steps
from drover.home import drover_home
from drover.timing import History, RunTiming


@task(name="publish-timing", cache_policy=NONE)
def publish_timing(run: RunTiming) -> str:
    """The run's stage table, summary and history row, and the provider calls it made per
    node and step (`<flow>-<cluster>-steps`), so a slow step names itself."""
    History(drover_home() / "history.db").record(run)
    key = f"{run.flow}-{run.cluster}"
    create_table_artifact(run.rows(), key=key, description=run.verdict())
    taken = steps.drain(run.cluster)
    if taken:
        create_table_artifact(steps.rows(taken), key=f"{key}-steps",
                              description="provider calls per node and step")
        for line in steps.lines(taken):
            get_run_logger().info("%s: %s", run.cluster, line)
    create_markdown_artifact(run.markdown(), key=f"{key}-summary",
                             description=f"{run.flow} {run.cluster}: {run.outcome}")
    get_run_logger().info("%s: %s %s", run.cluster, run.flow, run.verdict())
    return run.verdict()
