"""tasks/report.py, through publish_timing.fn(): what each artifact says first, the plain
table cells, the per-node table and the chart of the cluster's runs as a PNG image."""

from __future__ import annotations

import base64
import logging
import re

import pytest

from drover import steps
from drover.home import drover_home
from drover.timing import History, RunTiming, StageTiming
from tasks import report


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    made: dict[str, dict] = {}

    def table(rows, key, description):
        made[key] = {"type": "table", "data": rows, "description": description}

    def markdown(text, key, description):
        made[key] = {"type": "markdown", "data": text, "description": description}

    monkeypatch.setattr(report, "create_table_artifact", table)
    monkeypatch.setattr(report, "create_markdown_artifact", markdown)
    monkeypatch.setattr(report, "get_run_logger", lambda: logging.getLogger("test"))
    steps.drain("lab")  # provider calls another test of this process may have left
    return made


def deploy_run(started: float = 1_700_000_000.0) -> RunTiming:
    run = RunTiming("lab", "deploy", started, started + 252, "completed",
                    baseline_name="Kubespray cluster.yml",
                    stages=[StageTiming("provision", started, started + 100, 2, "lab-cp-1", 100),
                            StageTiming("bootstrap", started + 100, started + 110)])
    run.node_steps = {"lab-cp-1": [("provision", started, started + 100),
                                   ("config", started + 100, started + 252)],
                      "lab-worker-1": [("provision", started, started + 90),
                                       ("config", started + 90, started + 200)]}
    return run


def test_every_description_starts_with_the_short_verdict(published):
    verdict = report.publish_timing.fn(deploy_run())

    assert verdict.startswith("4m12s — within the 10m target; 10.7x faster than the 45m "
                              "Kubespray cluster.yml baseline")
    assert set(published) == {"deploy-lab", "deploy-lab-nodes", "deploy-lab-summary",
                              "deploy-lab-chart"}
    for artifact in published.values():
        assert artifact["description"].startswith("4m12s — within the 10m target")


def test_the_tables_hold_no_lone_dash_and_a_row_per_node(published):
    report.publish_timing.fn(deploy_run())

    cells = [str(v) for key in ("deploy-lab", "deploy-lab-nodes")
             for row in published[key]["data"] for v in row.values()]
    assert cells and "-" not in [c.strip() for c in cells]
    assert [row["node"] for row in published["deploy-lab-nodes"]["data"]] == [
        "lab-cp-1", "lab-worker-1"]


def test_the_chart_is_a_png_of_every_run_of_the_cluster(published):
    History(drover_home() / "history.db").record(deploy_run(1_699_990_000.0))

    report.publish_timing.fn(deploy_run())

    chart = published["deploy-lab-chart"]
    (url,) = re.findall(r"!\[[^]]*\]\((data:image/png;base64,[^)]+)\)", chart["data"])
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "(2 deploy)" in chart["description"]
