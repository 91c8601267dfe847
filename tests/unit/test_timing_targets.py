"""Each flow against its own target and baseline (spec.targets, targets_for), and the run's
summary as the UI shows it: short verdict first, per-node rows, no lone '-' in a cell."""

from __future__ import annotations

import re

import pytest

from drover.errors import SpecError
from drover.spec import parse_spec
from drover.timing import RunTiming, StageTiming, Targets, targets_for, verdict
from drover.timing_render import node_rows, stage_rows
from tests.unit.conftest import build_spec


def spec_with(targets: dict | None = None, deployment: dict | None = None):
    spec = build_spec()
    data = spec.model_dump(by_alias=True, exclude_none=True)
    body = data["spec"]
    body.pop("targets")
    body["deployment"] = {k: v for k, v in body["deployment"].items()
                          if k not in ("targetMinutes", "baselineMinutes")}
    body["deployment"].update(deployment or {})
    if targets is not None:
        body["targets"] = targets
    return parse_spec(data, source="t.yaml")


@pytest.mark.parametrize("flow, nodes, target, baseline, name", [
    ("deploy", 5, 600, 2700, "Kubespray cluster.yml"),
    ("deploy", 50, 600, 2700, "Kubespray cluster.yml"),       # a deploy's target is per run
    ("upgrade", 5, 5 * 180, 5 * 300, "Kubespray upgrade-cluster.yml"),
    ("upgrade", 1, 180, 300, "Kubespray upgrade-cluster.yml"),
    ("upgrade", 0, 180, 300, "Kubespray upgrade-cluster.yml"),  # never a zero target
    ("replace", 5, 600, None, ""),
    ("recover", 5, 900, None, ""),
])
def test_each_flow_has_its_own_default_target_and_baseline(flow, nodes, target, baseline, name):
    got = targets_for(spec_with(), flow, nodes)

    assert (got.target_seconds, got.baseline_seconds, got.baseline_name) == (
        target, baseline, name)


def test_the_upgrade_baseline_cites_where_its_number_comes_from():
    source = targets_for(spec_with(), "upgrade", 3).baseline_source

    assert "upgrade-cluster.yml" in source
    assert "https://github.com/kubernetes-sigs/kubespray/pull/8050" in source


def test_targets_are_configurable_per_flow():
    spec = spec_with({"upgrade": {"perNodeTargetMinutes": 2, "baselinePerNodeMinutes": 8,
                                  "baselineName": "our Ansible", "baselineSource": "wiki"},
                      "replace": {"targetMinutes": 6, "baselineMinutes": 30}})

    assert targets_for(spec, "upgrade", 4) == Targets(480, 1920, "our Ansible", "wiki")
    assert targets_for(spec, "replace", 4) == Targets(360, 1800)
    assert targets_for(spec, "deploy", 4).target_seconds == 600  # untouched: the default


@pytest.mark.parametrize("deployment, targets, target, baseline", [
    ({"targetMinutes": 8}, None, 8, 45),                       # the old place still works
    ({"targetMinutes": 8, "baselineMinutes": 30}, None, 8, 30),
    ({}, {"deploy": {"targetMinutes": 7}}, 7, 45),              # the new place
    ({"targetMinutes": 7}, {"deploy": {"targetMinutes": 7}}, 7, 45),  # both, agreeing
    ({}, {"deploy": {"targetMinutes": 7, "baselineMinutes": None}}, 7, None),  # no baseline
])
def test_the_deploy_target_may_be_given_in_the_old_or_the_new_place(
        deployment, targets, target, baseline):
    spec = spec_with(targets, deployment)

    got = targets_for(spec, "deploy", 3)
    assert (got.target_seconds, got.baseline_seconds) == (
        target * 60, baseline * 60 if baseline else None)
    assert (spec.spec.deployment.target_minutes, spec.spec.deployment.baseline_minutes) == (
        target, baseline)
    assert got.baseline_name == "Kubespray cluster.yml"


def test_a_deploy_target_given_twice_differently_is_an_error_naming_both_places():
    with pytest.raises(SpecError) as caught:
        spec_with({"deploy": {"targetMinutes": 7}}, {"targetMinutes": 8})

    (issue,) = caught.value.issues
    assert issue.startswith("spec.deployment.targetMinutes:")
    assert "spec.targets.deploy.targetMinutes" in issue and "once" in issue


def test_an_unknown_flow_in_targets_is_refused():
    with pytest.raises(SpecError) as caught:
        spec_with({"destroy": {"targetMinutes": 1}})

    assert any("spec.targets.destroy" in issue for issue in caught.value.issues)


@pytest.mark.parametrize("total, target, baseline, name, text", [
    (17.2, 600, 2700, "Kubespray cluster.yml",
     "17.2s — within the 10m target; 157.0x faster than the 45m Kubespray cluster.yml baseline"),
    (17.2, 600, None, "", "17.2s — within the 10m target"),
    (700, 600, None, "", "11m40s — over the 10m target by 1m40s"),
    (1800, 900, 1500, "Kubespray upgrade-cluster.yml",
     "30m — over the 15m target by 15m; no faster than the 25m Kubespray upgrade-cluster.yml "
     "baseline"),
])
def test_the_verdict_names_the_baseline_it_compares_with(total, target, baseline, name, text):
    assert verdict(total, target, baseline, name) == text


def test_a_run_is_judged_against_the_targets_of_its_flow():
    run = RunTiming("lab", "upgrade", 0.0, 600.0, "completed")
    run.judge(targets_for(spec_with(), "upgrade", 5))

    assert run.short_verdict() == "10m — within the 15m target"
    assert run.verdict() == ("10m — within the 15m target; 2.5x faster than the 25m "
                             "Kubespray upgrade-cluster.yml baseline")


def pipelined_run() -> RunTiming:
    run = RunTiming("lab", "deploy", 0.0, 100.0, "completed", baseline_name="Kubespray cluster.yml",
                    baseline_source="Equinix case study",
                    stages=[StageTiming("provision", 0.0, 40.0, 2, "lab-cp-1", 40.0),
                            StageTiming("bootstrap", 40.0, 45.0)])
    run.node_steps = {"lab-cp-1": [("provision", 0.0, 40.0), ("config", 40.0, 100.0)],
                      "lab-worker-1": [("provision", 0.0, 30.0), ("config", 30.0, 70.0)]}
    return run


def test_node_rows_give_each_nodes_chain_and_mark_the_critical_one():
    assert node_rows(pipelined_run()) == [
        {"node": "lab-cp-1", "steps": "provision 40.0s → config 1m", "duration": "1m40s",
         "critical": "yes"},
        {"node": "lab-worker-1", "steps": "provision 30.0s → config 40.0s",
         "duration": "1m10s", "critical": ""}]


def test_the_summary_puts_the_short_verdict_first_and_has_a_row_per_node():
    text = pipelined_run().markdown(chart="data:image/png;base64,AAAA")

    lines = text.splitlines()
    assert lines[2].startswith("**1m40s — within the 10m target**; 27.0x faster")
    assert "| lab-cp-1 | provision 40.0s → config 1m | 1m40s | yes |" in lines
    assert "| lab-worker-1 | provision 30.0s → config 40.0s | 1m10s |   |" in lines
    assert "Baseline: Equinix case study" in lines
    assert lines[-1] == "![deploy durations over time](data:image/png;base64,AAAA)"


def test_no_table_cell_is_a_lone_dash_which_the_ui_would_render_as_a_bullet():
    run = pipelined_run()
    cells = [value for rows in (stage_rows(run), node_rows(run)) for row in rows
             for value in row.values()]
    cells += re.findall(r"\|([^|\n]*)(?=\|)", run.markdown())

    assert cells and all(cell.strip() != "-" for cell in cells)
