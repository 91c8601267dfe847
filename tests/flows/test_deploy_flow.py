"""deploy-cluster on the lab under Prefect: convergence, retries, failure clean-up, secrets."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL

from drover import deploy
from drover.clock import AutojumpClock, use_clock
from drover.errors import PreflightFailed, StageTimeout
from drover.home import cluster_dir
from drover.machineconfig import load_secrets, to_yaml
from drover.providers.lab import open_datacenter
from drover.spec import load_spec
from flows.deploy import deploy_cluster
from flows.destroy import destroy_cluster
from tests.flows.conftest import REPO, lab_config


def lab_of(config: str):
    return open_datacenter(load_spec(config))


def test_deploy_brings_up_every_declared_node_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    first = deploy_cluster(config=config)
    lab = lab_of(config)
    assert first["changed"] is True
    assert "within the 10m target" in first["verdict"]
    assert [n.name for n in lab.nodes()] == ["t-cp-1", "t-cp-2", "t-cp-3", "t-worker-1",
                                             "t-worker-2"]
    assert all(n.ready and n.state == "running" for n in lab.nodes())
    assert all(n.talos_version == "v1.13.9" for n in lab.nodes())
    status = lab.status()
    assert status.api_up and len(status.etcd_members) == 3

    second = deploy_cluster(config=config)

    assert second["changed"] is False
    assert second["plan"] == ["t: nothing to do: the cluster matches the file"]
    assert sum(1 for _, _, what in lab.events() if what == "created") == 5


def test_transient_create_failure_is_retried_and_the_deploy_succeeds(tmp_path: Path) -> None:
    config = lab_config(tmp_path, faults=[{"type": "create-fails", "node": "t-worker-1",
                                           "times": 2}])
    state = deploy_cluster(config=config, return_state=True)

    assert state.is_completed()
    lab = lab_of(config)
    assert len(lab.nodes()) == 5 and all(n.ready for n in lab.nodes())
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    provision = [r for r in runs if r.name == "provision-t-worker-1"]
    assert len(provision) == 1 and provision[0].run_count == 3  # two failures, one success


def test_transient_talos_api_errors_are_retried_per_call(tmp_path: Path) -> None:
    config = lab_config(tmp_path, faults=[{"type": "talos-api-errors", "node": "t-cp-1",
                                           "times": 3}])
    deploy_cluster(config=config)
    assert all(n.ready for n in lab_of(config).nodes())


def test_a_node_that_never_boots_fails_the_deploy_by_name_and_stage_and_leaves_nothing(
        tmp_path: Path) -> None:
    config = lab_config(tmp_path, faults=[{"type": "never-boots", "node": "t-cp-2"}])

    with pytest.raises(StageTimeout, match=r"t-cp-2: provision: did not reach maintenance mode"):
        deploy_cluster(config=config)

    lab = lab_of(config)
    assert lab.nodes() == []
    assert not lab.status().bootstrapped


def test_keep_on_failure_keeps_the_nodes_of_a_failed_fresh_deploy(tmp_path: Path) -> None:
    config = lab_config(tmp_path, faults=[{"type": "never-boots", "node": "t-worker-2"}])
    with pytest.raises(StageTimeout):
        deploy_cluster(config=config, keep_on_failure=True)
    assert len(lab_of(config).nodes()) == 5


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    result = deploy_cluster(config=config, dry_run=True)
    assert result["dry_run"] is True
    assert "t: will create t-cp-1 (controlplane)" in result["plan"]
    assert lab_of(config).nodes() == []


def test_bootstrap_happens_once_even_when_a_crashed_run_already_did_it(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    spec = load_spec(config)
    infra = deploy.Infra.open(spec)
    # A run that crashed right after bootstrapping: three nodes up, etcd bootstrapped.
    deploy.prepare_cluster_dir(spec)
    image = deploy.resolve_image(infra)
    for node in spec.declared_nodes()[:3]:
        deploy.provision_node(infra, node, image)
        deploy.configure_node(infra, node)
    assert deploy.bootstrap_etcd(infra) == "t-cp-1"

    deploy_cluster(config=config)
    deploy_cluster(config=config)

    lab = lab_of(config)
    assert lab.status().bootstraps == 1
    assert len(lab.nodes()) == 5 and all(n.ready for n in lab.nodes())


def test_a_deploy_killed_midway_and_rerun_ends_with_exactly_the_declared_nodes(
        tmp_path: Path) -> None:
    # The demo profile on the wall clock, compressed so the whole deploy takes a few seconds:
    # slow enough to kill the process part-way through provisioning.
    config = lab_config(tmp_path, profile="demo", clock="system", compression=4)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "drover.cli", "deploy", config], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    lab = lab_of(config)
    deadline = time.monotonic() + 60
    while len(lab.nodes()) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # a real child process: nothing to inject a clock into
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_with = len(lab.nodes())
    assert killed_with >= 2 and not all(n.ready for n in lab.nodes())

    deploy_cluster(config=config)

    nodes = lab.nodes()
    assert [n.name for n in nodes] == [n.name for n in load_spec(config).declared_nodes()]
    assert all(n.ready for n in nodes)
    assert lab.status().bootstraps == 1


def _secret_values(name: str) -> list[str]:
    """Every secret in the cluster's bundle, base64 and decoded, long enough to be unique."""
    bundle = load_secrets(cluster_dir(name))
    values = []
    for line in to_yaml(bundle).splitlines():
        value = line.partition(":")[2].strip().strip('"')
        if len(value) >= 16:
            values.append(value)
            try:
                decoded = base64.b64decode(value).decode()
            except ValueError:
                continue
            values += [part for part in decoded.splitlines() if len(part) >= 16
                       and not part.startswith("-----")]
    return values


def test_no_secret_value_appears_in_any_log_line_or_artifact(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    state = deploy_cluster(config=config, return_state=True)
    run_id = state.state_details.flow_run_id
    APILogWorker.drain_all()  # logs are shipped in the background; send them now
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    text = "\n".join([log.message for log in logs] + [str(a.data) for a in artifacts])
    secrets = _secret_values("t")

    assert len(logs) > 10 and {a.key for a in artifacts} >= {"deploy-t", "deploy-t-summary"}
    assert len(secrets) > 10
    assert not [s for s in secrets if s in text]
    for path in cluster_dir("t").iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


def test_deploy_publishes_timing_artifacts_and_history(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    state = deploy_cluster(config=config, return_state=True)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in artifacts if a.key}
    assert by_key["deploy-t"].type == "table"
    assert "provision" in str(by_key["deploy-t"].data)
    assert "within the 10m target" in str(by_key["deploy-t-summary"].data)
    assert any(a.type == "progress" and a.data == 100.0 for a in artifacts)


def test_destroy_removes_every_node_and_the_cluster_secrets(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    deploy_cluster(config=config)
    with pytest.raises(ValueError, match="confirm=true"):
        destroy_cluster(cluster="t")
    assert len(lab_of(config).nodes()) == 5

    result = destroy_cluster(cluster="t", confirm=True)

    assert sorted(result["deleted"]) == sorted(n.name for n in load_spec(config).declared_nodes())
    assert lab_of(config).nodes() == []
    assert not (Path(os.environ["DROVER_HOME"]) / "clusters" / "t").exists()
    assert destroy_cluster(cluster="t", confirm=True)["deleted"] == []


def test_a_slow_node_no_longer_delays_the_others_config_push(tmp_path: Path) -> None:
    """Under exact virtual time (every wait ends in order): the other nodes' configs go in
    while the slow node still boots; the slow node's own chain is the critical path."""
    config = lab_config(tmp_path, faults=[{"type": "slow-boot", "node": "t-worker-2",
                                          "afterSeconds": 90}])
    clock = AutojumpClock()

    with use_clock(clock), clock.participant():
        result = deploy_cluster(config=config)

    events = lab_of(config).events()
    slow_booted = next(at for at, node, what in events
                       if node == "t-worker-2" and what == "maintenance")
    others = {node: at for at, node, what in events
              if what == "installing" and node != "t-worker-2"}
    assert len(others) == 4 and max(others.values()) < slow_booted  # nobody waited for it
    assert result["critical_path"].startswith("t-worker-2: provision 1m")
    assert {r["stage"] for r in result["timing"]} >= {"provision", "configure", "bootstrap"}


def test_a_preflight_shortfall_names_it_and_creates_nothing(tmp_path: Path) -> None:
    config = lab_config(tmp_path, workers=30, network="10.7.0.0/27")  # 30 hosts, 9 reserved

    with pytest.raises(PreflightFailed, match=r"10.7.0.0/27 has 21 free address\(es\), 33 "
                                              r"node\(s\) to create: short by 12"):
        deploy_cluster(config=config)

    assert lab_of(config).nodes() == [] and lab_of(config).events() == []
