"""prefect.yaml on a real Prefect server and process worker: deploy-cluster triggered
through the REST API the way the UI's "Run" button does it, and what `prefect deploy`
creates (schedules, the remediation automation)."""

from __future__ import annotations

from pathlib import Path

from drover.providers.lab import open_datacenter
from drover.spec import load_spec
from tests.flows.conftest import lab_config
from tests.system.conftest import Server, finished_run


def test_prefect_yaml_deploys_with_its_schedules_and_the_remediation_trigger(
        project: Server) -> None:
    with project.api() as api:
        health = api.get("/deployments/name/check-health/check-health").json()
        fleet = api.get("/deployments/name/upgrade-fleet/upgrade-fleet").json()
        automations = api.post("/automations/filter", json={}).json()

    assert [s["schedule"]["interval"] for s in health["schedules"]] == [300.0]
    nightly = [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in fleet["schedules"]]
    assert nightly == [("0 2 * * *", "Europe/Amsterdam")]
    trigger = next(a for a in automations if a["name"] == "replace-unhealthy-node")
    assert trigger["trigger"]["expect"] == ["drover.node.unhealthy"]
    assert trigger["actions"][0]["type"] == "run-deployment"


def test_deploy_cluster_runs_on_a_worker_when_triggered_through_the_api(
        project: Server, worker: Path, tmp_path: Path) -> None:
    config = lab_config(tmp_path, name="sys")
    with project.api() as api:
        deployment = api.get("/deployments/name/deploy-cluster/deploy-cluster").json()
        form = deployment["parameter_openapi_schema"]["properties"]
        assert {"config", "talos_version", "kubernetes_version", "dry_run",
                "keep_on_failure"} <= set(form)
        assert form["dry_run"]["type"] == "boolean"
        assert deployment["parameters"]["config"] == "configs/lab.yaml"

        run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                       json={"parameters": {"config": config}}).json()
        state = finished_run(api, run["id"])["state"]
        assert state["type"] == "COMPLETED", worker.read_text()[-4000:]
        artifacts = api.post("/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()

    by_key = {a["key"]: a for a in artifacts if a["key"]}
    assert by_key["deploy-sys"]["type"] == "table"
    assert "within the 10m target" in by_key["deploy-sys-summary"]["data"]
    # the compliance evidence of the run, as the UI's Artifacts tab shows it
    assert by_key["compliance-sys"]["type"] == "table"
    assert "cis-1.12" in by_key["compliance-sys-report"]["data"]
    assert "1.2.15" in by_key["compliance-sys-report"]["data"]
    nodes = open_datacenter(load_spec(config)).nodes()
    assert len(nodes) == 5 and all(n.ready for n in nodes)
