"""Tasks that observe a cluster and remove nodes."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from drover import deploy
from drover.plan import Observed
from drover.spec import ClusterSpec


@task(name="observe-cluster", cache_policy=NONE)
def observe_cluster(spec: ClusterSpec) -> Observed:
    return deploy.observe(deploy.Infra.open(spec))


@task(name="delete-nodes", cache_policy=NONE)
def delete_nodes(spec: ClusterSpec, names: list[str] | None = None) -> list[str]:
    """Delete the named nodes, or every node of the cluster; absent ones are fine."""
    deleted = deploy.destroy(deploy.Infra.open(spec), names)
    logger = get_run_logger()
    for name in deleted:
        logger.info("%s: deleted", name)
    return deleted
