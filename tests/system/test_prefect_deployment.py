"""deploy-cluster from prefect.yaml on a real Prefect server and process worker,
triggered through the REST API the way the UI's "Run" button does it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from drover.providers.lab import open_datacenter
from drover.spec import load_spec
from tests.flows.conftest import lab_config
from tests.system.conftest import PREFECT, REPO, Server, stop, wait_for

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def test_deploy_cluster_runs_on_a_worker_when_triggered_through_the_api(
        prefect_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "drover-home"
    monkeypatch.setenv("DROVER_HOME", str(home))
    config = lab_config(tmp_path, name="sys")
    prefect_server.run("work-pool", "create", "drover-local", "--type", "process")
    prefect_server.run("--no-prompt", "deploy", "--all")
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", "drover-local", "--limit", "2"], cwd=REPO,
        env={**prefect_server.env, "DROVER_HOME": str(home), "PREFECT_WORKER_QUERY_SECONDS": "1"},
        stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with prefect_server.api() as api:
            deployment = api.get("/deployments/name/deploy-cluster/deploy-cluster").json()
            form = deployment["parameter_openapi_schema"]["properties"]
            assert {"config", "talos_version", "kubernetes_version", "dry_run",
                    "keep_on_failure"} <= set(form)
            assert form["dry_run"]["type"] == "boolean"
            assert deployment["parameters"]["config"] == "configs/lab.yaml"

            run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                           json={"parameters": {"config": config}}).json()

            def finished() -> dict | None:
                state = api.get(f"/flow_runs/{run['id']}").json()["state"]
                return state if state["type"] in TERMINAL else None

            state = wait_for(finished, 240, "the deploy-cluster run to finish")
            assert state["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
            artifacts = api.post("/artifacts/filter", json={
                "artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    finally:
        stop(worker)
        worker_log.close()

    by_key = {a["key"]: a for a in artifacts if a["key"]}
    assert by_key["deploy-sys"]["type"] == "table"
    assert "within the 10m target" in by_key["deploy-sys-summary"]["data"]
    nodes = open_datacenter(load_spec(config)).nodes()
    assert len(nodes) == 5 and all(n.ready for n in nodes)
