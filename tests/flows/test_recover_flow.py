"""recover-cluster on the lab under Prefect: a destroy killed half-way leaves etcd without
quorum; the next deploy stops and names `drover recover`; the flow restores etcd from the
latest snapshot, after which a deploy completes the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow

from drover.errors import QuorumError
from drover.recover import list_snapshots
from drover.spec import ClusterSpec, load_spec
from flows.deploy import deploy_cluster
from flows.recover import recover_cluster
from tasks.recover import snapshot_etcd
from tests.flows.conftest import lab_config
from tests.flows.test_deploy_flow import lab_of


@flow(name="snapshot-before-something")
def take_snapshot(spec: ClusterSpec) -> Path | None:
    """What upgrade, replace and destroy do first."""
    return snapshot_etcd(spec)


def test_a_destroy_killed_half_way_is_recovered_by_the_flow_and_deploy_completes(
        tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    deploy_cluster(config=config)
    spec = load_spec(config)
    snapshot = take_snapshot(spec)
    assert snapshot is not None and list_snapshots("t") == [snapshot]
    lab = lab_of(config)
    for name in ("t-cp-2", "t-cp-3"):  # the destroy was killed here
        lab.delete(name)
    assert take_snapshot(spec) is None  # nothing to snapshot without quorum: a no-op
    with pytest.raises(QuorumError, match="drover recover t"):
        deploy_cluster(config=config)

    dry = recover_cluster("t", dry_run=True)
    assert dry["recovered"] is False
    assert any(f"restore etcd from {snapshot.name}" in line for line in dry["plan"])
    assert lab.status().recoveries == 0  # a dry run changes nothing

    result = recover_cluster("t")
    assert result["recovered"] is True and result["snapshot"] == snapshot.name
    assert result["members"] == ["t-cp-1", "t-cp-2", "t-cp-3"]

    deploy_cluster(config=config)
    status = lab.status()
    assert status.api_up and not status.quorum_lost
    assert (status.bootstraps, status.recoveries) == (1, 1)
    assert all(healthy for _, _, healthy in status.etcd_members)
    assert all(n.ready for n in lab.nodes())


def test_recover_refuses_a_cluster_whose_etcd_has_quorum(tmp_path: Path) -> None:
    config = lab_config(tmp_path, workers=1)
    deploy_cluster(config=config)
    lab_of(config).kill("t-cp-3")

    with pytest.raises(QuorumError, match=r"has not lost quorum \(2 of 3"):
        recover_cluster("t")
    assert lab_of(config).status().recoveries == 0
