"""Day 2 on a real Prefect server: a health check's event, through the automation from
prefect.yaml, replaces a dead node with no human action; a fleet upgrade keeps to its
concurrency limits and reports each cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import yaml

from drover.providers.lab import open_datacenter
from drover.spec import load_spec
from tests.system.conftest import REPO, Server, finished_run, lab_cluster, runs_of, wait_for


def drover_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "drover.cli", *args], cwd=REPO,
                          env=server.env | {"DROVER_HOME": os.environ["DROVER_HOME"]},
                          capture_output=True, text=True, timeout=300, check=False)


def unhealthy_events(server: Server, cluster: str) -> list[dict]:
    with server.api() as api:
        page = api.post("/events/filter", json={"filter": {
            "event": {"name": ["drover.node.unhealthy"]},
            "any_resource": {"id_prefix": [f"drover.node.{cluster}."]}}, "limit": 50}).json()
    return page["events"]


def test_a_dead_worker_is_replaced_through_the_health_event_and_the_automation(
        project: Server, worker: Path, tmp_path: Path) -> None:
    # a lab fault: heal-worker-1 loses power an hour after it started running
    config = lab_cluster(tmp_path, "heal", workers=2, faults=[
        {"type": "dies", "node": "heal-worker-1", "afterSeconds": 3600}])
    lab = open_datacenter(load_spec(config))
    assert all(n.ready for n in lab.nodes())
    lab.clock.sleep(3600)  # the lab's virtual clock: an hour passes, instantly
    assert lab.node("heal-worker-1").state == "dead"
    with project.api() as api:
        before = {r["id"] for r in runs_of(api, "replace-node/replace-node")}

    checked = drover_cli(project, "health", "heal", "--unhealthy-after", "0")

    assert checked.returncode == 0, checked.stderr
    assert "heal-worker-1 unhealthy too long: replacement requested" in checked.stdout
    with project.api() as api:
        run = wait_for(lambda: next((r for r in runs_of(api, "replace-node/replace-node")
                                     if r["id"] not in before), None),
                       60, "the automation to start replace-node")
        assert run["parameters"]["node"] == "heal-worker-1"
        assert finished_run(api, run["id"])["state"]["type"] == "COMPLETED", \
            worker.read_text()[-4000:]
    nodes = lab.nodes()
    assert sorted(n.name for n in nodes) == ["heal-cp-1", "heal-worker-2", "heal-worker-3"]
    assert all(n.ready for n in nodes)
    assert drover_cli(project, "health", "heal").stdout.strip() == "heal: every node healthy"


def test_with_half_the_nodes_dead_nothing_is_replaced_and_the_alert_says_why(
        project: Server, tmp_path: Path) -> None:
    config = lab_cluster(tmp_path, "mass", workers=3)
    lab = open_datacenter(load_spec(config))
    for name in ("mass-worker-1", "mass-worker-2"):
        lab.kill(name)

    checked = drover_cli(project, "health", "mass", "--unhealthy-after", "0")

    assert checked.returncode == 1
    assert "alert: mass: 2 of 4 nodes are unhealthy (mass-worker-1, mass-worker-2), more " \
           "than the 40% limit: not replacing any" in checked.stderr
    assert unhealthy_events(project, "mass") == []  # no event, so the automation never fires
    assert len(lab.nodes()) == 4


def overlap(runs: list[dict]) -> int:
    """The most runs that were running at the same moment."""
    edges = sorted([(datetime.fromisoformat(r["start_time"]), 1) for r in runs]
                   + [(datetime.fromisoformat(r["end_time"]), -1) for r in runs])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_fleet_upgrade_keeps_to_its_limits_and_reports_every_cluster(
        project: Server, worker: Path, tmp_path: Path) -> None:
    sites = {"ams": ["fa1", "fa2", "fa3"], "fra": ["fb1", "fb2"]}
    for clusters in sites.values():
        for name in clusters:
            lab_cluster(tmp_path, name)
    # fa3 is already on the target: the fleet must report it skipped
    upgraded = drover_cli(project, "upgrade", "fa3", "--talos-version", "v1.14.0")
    assert upgraded.returncode == 0, upgraded.stderr
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({
        "apiVersion": "drover/v1alpha1", "kind": "Fleet", "metadata": {"name": "test"},
        "spec": {"talosVersion": "v1.14.0", "limits": {"fleet": 2, "perSite": 1},
                 "sites": [{"name": site, "clusters": clusters}
                           for site, clusters in sites.items()]}}))

    with project.api() as api:
        before = {r["id"] for r in runs_of(api, "upgrade-cluster/upgrade-cluster")}
        deployment = api.get("/deployments/name/upgrade-fleet/upgrade-fleet").json()
        run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                       json={"parameters": {"fleet": str(fleet)}}).json()
        state = finished_run(api, run["id"], timeout=400)["state"]
        assert state["type"] == "COMPLETED", worker.read_text()[-4000:]
        children = [r for r in runs_of(api, "upgrade-cluster/upgrade-cluster")
                    if r["id"] not in before]
        report = next(a for a in api.post("/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
            if a["key"] == "fleet-test")

    outcomes = {row["cluster"]: row["outcome"] for row in json.loads(report["data"])}
    assert outcomes == {"fa1": "upgraded", "fa2": "upgraded", "fa3": "skipped",
                        "fb1": "upgraded", "fb2": "upgraded"}
    assert len(children) == 5
    assert overlap(children) <= 2
    for clusters in sites.values():
        assert overlap([r for r in children if r["parameters"]["cluster"] in clusters]) == 1
    for clusters in sites.values():
        for name in clusters:
            spec = load_spec(tmp_path / f"{name}.yaml")
            assert {n.talos_version for n in open_datacenter(spec).nodes()} == {"v1.14.0"}
