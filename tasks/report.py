"""Task: publish a run's timing as Prefect artifacts and keep it in the history.

Every description starts with the short verdict ("4m12s — within the 10m target"): the UI's
artifact cards cut the rest off. Table cells never hold a lone "-" (the UI renders cells as
markdown: it would show a bullet). The chart of the cluster's runs is a PNG inside a
markdown artifact, as a data: URL: the Prefect 3.9 UI shows it (checked in headless
Chromium), where an image artifact would also print the whole URL as text.
"""

from __future__ import annotations

import base64

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from drover import steps
from drover.home import drover_home
from drover.timing import History, RunTiming
from drover.timing_render import node_rows, stage_rows


@task(name="publish-timing", cache_policy=NONE)
def publish_timing(run: RunTiming) -> str:
    """The run's stage table, its per-node table, summary, chart and history row, and the
    provider calls it made per node and step (`<flow>-<cluster>-steps`), so a slow step
    names itself."""
    history = History(drover_home() / "history.db")
    history.record(run)
    key = f"{run.flow}-{run.cluster}"
    short, full = run.short_verdict(), run.verdict()
    create_table_artifact(stage_rows(run), key=key, description=full)
    nodes = node_rows(run)
    if nodes:
        create_table_artifact(nodes, key=f"{key}-nodes",
                              description=f"{short}: {len(nodes)} nodes, each one's chain")
    taken = steps.drain(run.cluster)
    if taken:
        create_table_artifact(steps.rows(taken), key=f"{key}-steps",
                              description=f"{short}: provider calls per node and step")
        for line in steps.lines(taken):
            get_run_logger().info("%s: %s", run.cluster, line)
    create_markdown_artifact(run.markdown(), key=f"{key}-summary", description=full)
    publish_chart(history.runs(run.cluster), f"{key}-chart", short)
    get_run_logger().info("%s: %s %s", run.cluster, run.flow, full)
    return full


def publish_chart(runs: list[RunTiming], key: str, short: str) -> None:
    """The chart of `runs` (every flow of the cluster) as an image in a markdown artifact."""
    from drover.chart import render_chart  # matplotlib, loaded at the first chart

    png, series = render_chart(runs, title=f"{runs[0].cluster}: durations per flow"
                               if runs else "")
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    drawn = ", ".join(f"{len(s.points)} {flow}" for flow, s in series.items()) or "no runs"
    create_markdown_artifact(f"![durations per flow over time]({url})\n\nRuns drawn: {drawn}; "
                             "dashed: each run's target, dotted: its baseline.\n",
                             key=key, description=f"{short}: durations over time ({drawn})")
