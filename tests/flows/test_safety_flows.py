"""Issue 7 as an outside tester found it, each case reproduced through the flows on the lab:
overlapping operations, hostile names and paths, missing secrets, killed runs, downgrades."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL

from drover import lease
from drover.errors import ClusterBusy, DowngradeRefused, InvalidName, SecretsMissing, StateError
from drover.home import cluster_dir
from drover.timing import History
from flows.deploy import deploy_cluster
from flows.destroy import destroy_cluster
from flows.replace import replace_node
from flows.upgrade import upgrade_cluster
from tests.flows.conftest import REPO, lab_config
from tests.flows.test_deploy_flow import lab_of


def start_deploy(config: str) -> subprocess.Popen[bytes]:
    """`drover deploy` in its own process on the wall clock (the demo profile, compressed so
    it lasts a few seconds), as a second operator's terminal would run it."""
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.Popen([sys.executable, "-m", "drover.cli", "deploy", config], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not condition() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # a real child process: nothing to inject a clock into
    assert condition(), "the other deploy never got there"


def test_a_second_deploy_while_one_runs_is_refused_by_name_and_the_first_ends_whole(
        tmp_path: Path) -> None:
    # slow enough on the wall clock that both refusals below meet it still running
    config = lab_config(tmp_path, profile="demo", clock="system", compression=1.5)
    first = start_deploy(config)
    lab = lab_of(config)
    wait_for(lambda: len(lab.nodes()) >= 2, first)

    with pytest.raises(ClusterBusy, match=rf"t: busy with deploy \(run .*pid {first.pid}"):
        deploy_cluster(config=config)
    with pytest.raises(ClusterBusy, match="busy with deploy"):
        replace_node(cluster="t", node="t-cp-1")

    assert first.wait(timeout=120) == 0, first.stderr.read().decode() if first.stderr else ""
    nodes = lab.nodes()
    assert [n.name for n in nodes] == ["t-cp-1", "t-cp-2", "t-cp-3", "t-worker-1", "t-worker-2"]
    assert all(n.ready for n in nodes) and lab.status().bootstraps == 1
    assert lease.holder("t") is None


def test_an_operation_told_to_wait_runs_once_the_holder_is_done(tmp_path: Path) -> None:
    config = lab_config(tmp_path, profile="demo", clock="system", compression=4)
    first = start_deploy(config)
    lab = lab_of(config)
    wait_for(lambda: lease.holder("t") is not None, first)

    result = deploy_cluster(config=config, if_busy="wait", wait_seconds=120)

    assert first.wait(timeout=60) == 0
    assert result["changed"] is False  # it waited, then found the first deploy's work done
    assert len(lab.nodes()) == 5


def test_a_run_killed_in_the_health_gate_is_finished_by_a_rerun_with_client_configs(
        tmp_path: Path) -> None:
    config = lab_config(tmp_path, profile="demo", clock="system", compression=4)
    proc = start_deploy(config)
    lab = lab_of(config)
    wait_for(lambda: lab.status().bootstrapped, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = cluster_dir("t")
    assert not (folder / "talosconfig").exists()

    deploy_cluster(config=config)  # the killed holder's lease is taken over at once

    assert (folder / "talosconfig").exists() and (folder / "kubeconfig").exists()
    runs = History(Path(os.environ["DROVER_HOME"]) / "history.db").runs("t", "deploy")
    assert [r.outcome for r in runs] == ["killed"]  # the re-run had nothing left to time
    assert "not judged against the target" in runs[0].verdict()


def test_destroy_of_a_path_like_name_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    decoy = tmp_path / "x"
    decoy.mkdir()
    deploy_cluster(config=lab_config(tmp_path))

    for name in ("../../../x", "../x", "t/../t", "/tmp", "T"):
        with pytest.raises(InvalidName, match="cluster name"):
            destroy_cluster(cluster=name, confirm=True)

    assert decoy.is_dir() and len(lab_of(lab_config(tmp_path)).nodes()) == 5


def test_a_config_outside_the_configs_folder_is_refused_and_none_of_it_is_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.yaml"
    outside.write_text("root:$6$saltsalt$HASHEDSECRETVALUE:19000:0:99999:7:::\n")
    monkeypatch.setenv("DROVER_CONFIG_ROOT", str(tmp_path / "configs"))

    state = deploy_cluster(config=str(outside), return_state=True)

    assert state.is_failed()
    with pytest.raises(InvalidName, match="outside"):
        state.result()
    APILogWorker.drain_all()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    assert logs and not [log for log in logs if "HASHEDSECRET" in log.message]


def test_scale_up_and_upgrade_stop_when_the_secrets_are_gone(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    deploy_cluster(config=config)
    folder = cluster_dir("t")
    talosconfig = (folder / "talosconfig").read_bytes()
    (folder / "secrets.yaml").unlink()
    data = yaml.safe_load(Path(config).read_text())
    data["spec"]["workers"][0]["count"] = 3
    Path(config).write_text(yaml.safe_dump(data))

    with pytest.raises(SecretsMissing, match="drover secrets restore"):
        deploy_cluster(config=config)
    with pytest.raises(SecretsMissing):
        upgrade_cluster(cluster="t", talos_version="v1.14.0")

    lab = lab_of(config)
    assert len(lab.nodes()) == 5 and {n.talos_version for n in lab.nodes()} == {"v1.13.9"}
    assert not (folder / "secrets.yaml").exists()
    assert (folder / "talosconfig").read_bytes() == talosconfig


def test_a_downgrade_is_refused_unless_allowed(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    deploy_cluster(config=config)

    with pytest.raises(DowngradeRefused, match="refusing to downgrade Talos to v1.13.0"):
        upgrade_cluster(cluster="t", talos_version="v1.13.0")
    assert {n.talos_version for n in lab_of(config).nodes()} == {"v1.13.9"}

    upgrade_cluster(cluster="t", talos_version="v1.13.0", allow_downgrade=True)
    assert {n.talos_version for n in lab_of(config).nodes()} == {"v1.13.0"}


def test_a_cluster_whose_remembered_spec_broke_is_destroyed_from_its_config(
        tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    deploy_cluster(config=config)
    remembered = cluster_dir("t") / "cluster.json"
    remembered.write_text("{ not json")

    with pytest.raises(StateError, match="destroy t --config"):
        destroy_cluster(cluster="t", confirm=True)

    result = destroy_cluster(cluster="t", confirm=True, config=config)
    assert len(result["deleted"]) == 5 and lab_of(config).nodes() == []
