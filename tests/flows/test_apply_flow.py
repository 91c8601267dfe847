"""`drover apply` (the deploy-cluster flow) on the lab: the file is the cluster. Versions,
counts and patches changed in the file converge safely; a re-apply is a no-op; downgrades
and a file behind the cluster are refused plainly; drift is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drover import apply
from drover.deploy import Infra
from drover.errors import DowngradeRefused
from drover.spec import load_spec
from flows.deploy import deploy_cluster
from flows.health import check_health
from flows.upgrade import upgrade_cluster
from tests.flows.conftest import lab_config
from tests.flows.test_day2_flows import replay
from tests.flows.test_deploy_flow import lab_of


def edit(config: str, change: Any) -> None:
    data = yaml.safe_load(Path(config).read_text())
    change(data["spec"])
    Path(config).write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_version_bump_in_the_file_is_a_quorum_safe_rolling_upgrade(tmp_path: Path) -> None:
    config = lab_config(tmp_path, workers=3)
    deploy_cluster(config=config)
    lab = lab_of(config)
    before = len(lab.events())
    edit(config, lambda s: s["talos"].update(version="v1.14.0"))

    diff = deploy_cluster(config=config, dry_run=True)
    assert "| t-cp-1 | upgrade | Talos | → v1.14.0 | yes |" in diff["diff"]
    result = deploy_cluster(config=config)

    assert result["changed"] and {n.talos_version for n in lab.nodes()} == {"v1.14.0"}
    workers = {n.name for n in lab.nodes() if n.role == "worker"}
    steps = replay(lab.events(), before, workers)
    assert min(healthy for healthy, _ in steps) == 2      # one control plane down at a time
    assert max(unavailable for _, unavailable in steps) == 1  # maxUnavailable 1
    assert deploy_cluster(config=config)["changed"] is False  # a re-apply is a no-op


def test_lowering_workers_drains_and_deletes_the_surplus(tmp_path: Path) -> None:
    config = lab_config(tmp_path, workers=3)
    deploy_cluster(config=config)
    edit(config, lambda s: s["workers"][0].update(count=2))

    deploy_cluster(config=config)

    lab = lab_of(config)
    assert [n.name for n in lab.nodes() if n.role == "worker"] == ["t-worker-1", "t-worker-2"]
    events = [(node, what) for _, node, what in lab.events() if node == "t-worker-3"]
    assert events[-3:] == [("t-worker-3", "cordoned"), ("t-worker-3", "drained"),
                           ("t-worker-3", "deleted")]


def test_lowering_control_planes_5_to_3_removes_members_one_at_a_time(tmp_path: Path) -> None:
    config = lab_config(tmp_path, control_planes=5, workers=1)
    deploy_cluster(config=config)
    lab = lab_of(config)
    before = len(lab.events())
    edit(config, lambda s: s["controlPlane"].update(count=3))

    deploy_cluster(config=config)

    assert sorted(n.name for n in lab.nodes() if n.role == "controlplane") == [
        "t-cp-1", "t-cp-2", "t-cp-3"]
    assert sorted(m[0] for m in lab.status().etcd_members) == ["t-cp-1", "t-cp-2", "t-cp-3"]
    removals = [(node, what) for _, node, what in lab.events()[before:]
                if what in ("etcd-member-removed", "deleted")]
    assert removals == [("t-cp-4", "etcd-member-removed"), ("t-cp-4", "deleted"),
                        ("t-cp-5", "etcd-member-removed"), ("t-cp-5", "deleted")]
    steps = replay(lab.events(), before, set())
    assert min(healthy for healthy, _ in steps) >= 3  # quorum of what is left, always


def test_a_patch_change_reaches_exactly_the_affected_nodes_with_the_right_reboots(
        tmp_path: Path) -> None:
    config = lab_config(tmp_path, workers=2)
    deploy_cluster(config=config)
    lab = lab_of(config)
    before = len(lab.events())
    # a worker-only sysctl (applied live) and a file (Talos v1.13 reboots for it)
    edit(config, lambda s: s["patches"].update(worker=[
        {"machine": {"sysctls": {"net.core.somaxconn": "4096"}}},
        {"machine": {"files": [{"path": "/var/etc/drover-note", "op": "create",
                                "permissions": 0o644, "content": "managed by drover"}]}}]))

    diff = deploy_cluster(config=config, dry_run=True)["diff"]
    assert "`machine.sysctls.net.core.somaxconn` | (unset) → '4096'" in diff
    assert "t-cp-1" not in diff
    deploy_cluster(config=config)

    changed = {node for _, node, what in lab.events()[before:] if what == "config-updated"}
    rebooted = {node for _, node, what in lab.events()[before:] if what == "rebooting"}
    assert changed == rebooted == {"t-worker-1", "t-worker-2"}
    assert deploy_cluster(config=config)["changed"] is False


def test_a_live_change_applies_without_a_reboot(tmp_path: Path) -> None:
    config = lab_config(tmp_path, workers=1)
    deploy_cluster(config=config)
    lab = lab_of(config)
    before = len(lab.events())
    edit(config, lambda s: s["patches"].update(worker=[
        {"machine": {"sysctls": {"net.core.somaxconn": "4096"}}}]))

    deploy_cluster(config=config)

    whats = [(node, what) for _, node, what in lab.events()[before:]]
    assert ("t-worker-1", "config-updated") in whats and ("t-worker-1", "rebooting") not in whats


def test_a_downgrade_in_the_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    deploy_cluster(config=config)
    edit(config, lambda s: s["talos"].update(version="v1.13.0"))

    with pytest.raises(DowngradeRefused, match="the file is behind the cluster: "
                       "spec.talos.version says v1.13.0, the cluster runs v1.13.9"):
        deploy_cluster(config=config)
    assert {n.talos_version for n in lab_of(config).nodes()} == {"v1.13.9"}


def test_drift_after_an_override_is_reported_by_status_health_and_apply(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    deploy_cluster(config=config)
    upgrade_cluster(cluster="t", talos_version="v1.14.0")

    # apply of the unchanged file: the file is behind, said plainly, nothing touched
    with pytest.raises(DowngradeRefused, match=r"the file is behind the cluster: spec.talos."
                       r"version says v1.13.9, the cluster runs v1.14.0 \(set by drover upgrade"):
        deploy_cluster(config=config)
    # status and health against the file
    drifted = apply.drift(Infra.open(load_spec(config)))
    assert sorted(drifted) == ["t-cp-1", "t-cp-2", "t-cp-3", "t-worker-1", "t-worker-2"]
    assert drifted["t-cp-1"][0] == ("spec.talos.version: runs v1.14.0, the spec says v1.13.9")
    report = check_health(cluster="t", config=config)
    assert report["drift"]["t-worker-1"] == drifted["t-worker-1"]
    assert apply.overrides("t")[-1]["field"] == "spec.talos.version"
