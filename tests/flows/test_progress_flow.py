"""Progress, dry runs and the UI's form under Prefect: the progress artifact read back through
the API while runs go through their stages, dry runs named, tagged and planned, a health
check of a cluster that is not there, and the parameter schemas the UI renders."""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import validate
from rich.console import Console

from drover.cli_live import live
from drover.errors import NodeNotFound
from flows.deploy import deploy_cluster
from flows.destroy import destroy_cluster
from flows.health import check_health
from flows.recover import recover_cluster
from flows.replace import replace_node
from flows.upgrade import upgrade_cluster
from tests.flows.conftest import REPO, lab_config

FLOWS = [deploy_cluster, upgrade_cluster, replace_node, check_health, destroy_cluster,
         recover_cluster]


@contextmanager
def watching(key: str) -> Iterator[list[tuple[float, str]]]:
    """Poll the API for the progress artifact `key` while the block runs (a real server and a
    run on the wall clock: there is no clock to inject), collecting each distinct
    (percent, description) in the order seen."""
    seen: list[tuple[float, str]] = []
    done = threading.Event()

    def poll() -> None:
        with get_client(sync_client=True) as client:
            while not done.wait(0.05):
                for artifact in client.read_artifacts(artifact_filter=ArtifactFilter(
                        key=ArtifactFilterKey(any_=[key]))):
                    value = (float(artifact.data), artifact.description or "")  # type: ignore[arg-type]
                    if not seen or seen[-1] != value:
                        seen.append(value)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(poll,))
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def artifacts_of(state: Any) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return {a.key: a for a in found if a.key}


def seen_running(seen: list[tuple[float, str]], stage: str) -> bool:
    """Whether some update showed `stage` begun but not finished ('configure 1/2')."""
    for _, description in seen:
        match = re.search(rf"(?:^|· ){stage} (\d+)/(\d+)", description)
        if (match and int(match[1]) < int(match[2])) or f"{stage} …" in description:
            return True
    return False


def test_the_progress_artifact_moves_through_every_stage_of_a_deploy_and_an_upgrade(
        tmp_path: Path) -> None:
    # the realistic profile compressed 100x on the wall clock: stages of about 0.5-2 s
    config = lab_config(tmp_path, name="prog", control_planes=1, workers=1,
                        profile="realistic", compression=100, clock="system")
    with watching("deploy-prog-progress") as deploy_seen:
        deployed = deploy_cluster(config=config, return_state=True)
    with watching("upgrade-prog-progress") as upgrade_seen:
        upgraded = upgrade_cluster(cluster="prog", talos_version="v1.14.0", return_state=True)

    assert deployed.is_completed() and upgraded.is_completed()
    for seen, stages, final in (
            (deploy_seen, ["provision", "configure", "bootstrap", "health"],
             "completed: image ✓ · provision 2/2 · configure 2/2 · bootstrap 1/1 · health 2/2"),
            (upgrade_seen, ["upgrade"], "completed: image ✓ · upgrade 2/2")):
        percents = [p for p, _ in seen]
        assert percents == sorted(percents), seen  # never goes back
        assert len(set(percents)) >= len(stages) + 1, seen
        assert [s for s in stages if not seen_running(seen, s)] == [], seen
        assert seen[-1] == (100.0, final)
    for state, key in ((deployed, "deploy-prog-progress"), (upgraded, "upgrade-prog-progress")):
        progress = artifacts_of(state)[key]  # one artifact per run, updated in place
        assert (progress.type, progress.data) == ("progress", 100.0)


def test_a_failed_run_leaves_its_progress_artifact_at_the_failed_stage(tmp_path: Path) -> None:
    config = lab_config(tmp_path, name="broke", control_planes=1, workers=1,
                        faults=[{"type": "never-boots", "node": "broke-worker-1"}])
    state = deploy_cluster(config=config, return_state=True, keep_on_failure=True)

    assert state.is_failed()
    progress = artifacts_of(state)["deploy-broke-progress"]
    assert progress.description.startswith("failed: image ✓ · provision 1/2 ✗")
    assert 0 < progress.data < 100


def test_a_replace_shows_its_stages_per_node_in_the_artifact_and_the_live_view(
        tmp_path: Path) -> None:
    config = lab_config(tmp_path, name="rep", control_planes=1, workers=1)
    out = StringIO()
    with live(Console(file=out, force_terminal=False, width=200)):
        deploy_cluster(config=config)
        state = replace_node(cluster="rep", node="rep-worker-1", return_state=True)

    progress = artifacts_of(state)["replace-rep-progress"]
    assert (progress.data, progress.description) == (
        100.0, "completed: retire 1/1 · bring-up 1/1 · delete 1/1")
    lines = out.getvalue().splitlines()
    for line in ("rep: image done", "rep-cp-1: provision done", "rep-worker-1: configure done",
                 "rep-cp-1: bootstrap done", "rep-worker-1: health done",
                 "rep-worker-1: retire done", "rep-worker-2: bring-up done",
                 "rep-worker-1: delete done"):
        assert any(shown.startswith(line) for shown in lines), (line, lines)


def dry_runs(tmp_path: Path) -> list[tuple[str, Callable[..., Any], dict[str, Any], str]]:
    """A deployed 1 + 1 cluster, then each dry run: flow, its parameters, a planned line."""
    config = lab_config(tmp_path, name="dry", control_planes=1, workers=1)
    deploy_cluster(config=config)
    return [
        ("deploy", deploy_cluster, {"config": config, "talos_version": "v1.14.0",
                                    "kubernetes_version": ""},  # empty: unset
         "will upgrade dry-cp-1 to Talos v1.14.0"),
        ("upgrade", upgrade_cluster, {"cluster": "dry", "talos_version": "v1.14.0"},
         "will upgrade dry-worker-1 to Talos v1.14.0"),
        ("replace", replace_node, {"cluster": "dry", "node": "dry-worker-1"},
         "will cordon and drain dry-worker-1"),
        ("destroy", destroy_cluster, {"cluster": "dry"}, "will delete dry-worker-1"),
    ]


def test_dry_runs_are_named_tagged_and_publish_their_plan(tmp_path: Path) -> None:
    for flow, run, parameters, planned in dry_runs(tmp_path):
        state = run(dry_run=True, return_state=True, **parameters)
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(state.state_details.flow_run_id)
        plan = artifacts_of(state)[f"{flow}-dry-plan"]

        assert state.is_completed(), flow
        assert flow_run.name.startswith("dry-run-dry-"), flow_run.name
        assert "dry-run" in flow_run.tags
        assert plan.type == "markdown" and "Nothing was changed" in plan.data
        assert planned in plan.data, plan.data
    real = upgrade_cluster(cluster="dry", return_state=True)  # nothing to do, for real
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(real.state_details.flow_run_id)
    assert not flow_run.name.startswith("dry-run") and "dry-run" not in flow_run.tags


def test_a_health_check_of_a_cluster_never_deployed_completes_saying_so(
        tmp_path: Path) -> None:
    deploy_cluster(config=lab_config(tmp_path, name="real", control_planes=1, workers=0))
    state = check_health(cluster="ghost", return_state=True)

    assert state.is_completed()
    assert state.message == ("nothing deployed: ghost is not a cluster drover knows "
                             "(it knows: real)")
    assert state.result()["deployed"] is False


def test_other_flows_name_the_clusters_drover_knows_when_given_another() -> None:
    with pytest.raises(NodeNotFound, match=r"ghost: .*\(it knows none\); deploy it first"):
        upgrade_cluster(cluster="ghost")


def schema_of(flow: Any) -> dict[str, Any]:
    return parameter_schema(flow.fn).model_dump()


def test_optional_parameters_are_plain_fields_in_the_form() -> None:
    for flow in FLOWS:
        for name, field in schema_of(flow)["properties"].items():
            assert "anyOf" not in field, f"{flow.name}: {name}: {field}"
            assert field.get("type") in {"string", "integer", "number", "boolean"}, (name, field)
    versions = schema_of(upgrade_cluster)["properties"]
    assert versions["talos_version"]["type"] == "string"
    assert versions["max_unavailable"]["type"] == "integer"
    # what the server checks a run created from a deployment against: empty or absent is fine
    schema = schema_of(upgrade_cluster)
    assert validate({"cluster": "lab", "talos_version": ""}, schema) == []
    assert validate({"cluster": "lab"}, schema) == []


def test_the_config_is_a_choice_of_the_shipped_cluster_configs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DROVER_CONFIG_ROOT")
    monkeypatch.chdir(REPO)
    assert schema_of(deploy_cluster)["properties"]["config"]["enum"] == ["configs/lab.yaml"]

    monkeypatch.setenv("DROVER_CONFIG_ROOT", str(tmp_path))  # elsewhere: absolute paths
    config = lab_config(tmp_path, name="other")
    (tmp_path / "fleet.yaml").write_text("kind: Fleet\n")
    config_field = schema_of(deploy_cluster)["properties"]["config"]
    assert config_field["enum"] == [config] and config_field["type"] == "string"
