"""destroy-cluster: delete every node of a cluster and forget its secrets."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from drover.home import forget_cluster, remembered_spec
from tasks.nodes import delete_nodes, observe_cluster


@flow(name="destroy-cluster")
def destroy_cluster(cluster: str, confirm: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Delete every node of a cluster drover deployed, then its secrets and client configs.

    Args:
        cluster: the cluster's name (metadata.name in its config)
        confirm: must be true: this deletes every node and the cluster's secrets
        dry_run: list what would be deleted and change nothing
    """
    logger = get_run_logger()
    spec = remembered_spec(cluster)
    if spec is None:
        logger.info("%s: drover knows no such cluster; nothing to destroy", cluster)
        return {"cluster": cluster, "deleted": []}
    names = sorted(observe_cluster(spec).nodes)
    if dry_run:
        for name in names:
            logger.info("%s: would delete %s", cluster, name)
        return {"cluster": cluster, "deleted": [], "would_delete": names}
    if not confirm:
        raise ValueError(f"{cluster}: destroying deletes {len(names)} node(s) and the cluster's "
                         "secrets; pass confirm=true to go ahead")
    deleted = delete_nodes(spec)
    forget_cluster(cluster)
    logger.info("%s: destroyed (%d nodes deleted)", cluster, len(deleted))
    return {"cluster": cluster, "deleted": deleted}
