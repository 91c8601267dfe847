"""Tasks: etcd snapshots (taken before every upgrade, replacement and destroy) and the
recovery of a cluster whose etcd lost quorum."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from drover import deploy, recover
from drover.spec import ClusterSpec


@task(name="snapshot-etcd", cache_policy=NONE)
def snapshot_etcd(spec: ClusterSpec) -> Path | None:
    """An etcd snapshot in the cluster's snapshot folder; None (and why, logged) when no
    etcd can give one: never bootstrapped, quorum lost, or no member healthy."""
    logger = get_run_logger()
    infra = deploy.Infra.open(spec)
    health = infra.talos.cluster_health()
    if recover.snapshot_source(infra, health) is None:
        why = ("etcd was never bootstrapped" if not health.bootstrapped
               else "etcd has lost quorum" if health.quorum_lost
               else f"no healthy etcd member answers ({health.healthy_members()} of "
                    f"{len(health.members)} healthy)")
        logger.warning("%s: no etcd snapshot taken: %s", spec.name, why)
        return None
    path = recover.snapshot_etcd(infra)
    logger.info("%s: etcd snapshot %s", spec.name, path.name)
    return path


@task(name="plan-recovery", cache_policy=NONE)
def plan_recovery(spec: ClusterSpec, snapshot: str | None = None) -> recover.RecoveryPlan:
    """How to restore etcd; QuorumError (the refusal) when etcd has not lost quorum."""
    return recover.plan_recovery(deploy.Infra.open(spec), snapshot)


@task(name="perform-recovery", cache_policy=NONE)
def perform_recovery(spec: ClusterSpec, plan: recover.RecoveryPlan) -> list[str]:
    members = recover.perform_recovery(deploy.Infra.open(spec), plan)
    get_run_logger().info("%s: etcd back with %d member(s): %s", spec.name, len(members),
                          ", ".join(members))
    return members
