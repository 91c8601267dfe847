"""destroy-cluster: delete every node of a cluster (workers first) and forget its secrets.
Holds the cluster's lease; an etcd snapshot is taken first, so a destroy killed half-way
can be undone with `drover recover`."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from drover.boundaries import cluster_name, flow_config_path
from drover.home import forget_cluster, recall_spec
from drover.parameters import OptionalText, unset_if_empty
from drover.spec import load_spec
from flows import known_list
from tasks.lease import hold_cluster
from tasks.nodes import delete_nodes, observe_cluster
from tasks.progress import dry_run_name, publish_dry_run
from tasks.recover import snapshot_etcd


@flow(name="destroy-cluster", flow_run_name=dry_run_name)
def destroy_cluster(cluster: str, confirm: bool = False, dry_run: bool = False,
                    config: OptionalText = None, if_busy: Literal["fail", "wait"] = "fail",
                    wait_seconds: float = 600) -> dict[str, Any]:
    """Delete every node of a cluster drover deployed, then its secrets and client configs.

    Args:
        cluster: the cluster's name (metadata.name in its config)
        confirm: must be true: this deletes every node and the cluster's secrets
        dry_run: publish what would be deleted (destroy-<cluster>-plan), tag the run
            dry-run, change nothing
        config: the cluster's YAML under configs/, when drover's remembered copy of it is
            damaged (otherwise the remembered spec is used)
        if_busy: when another operation holds the cluster: fail at once, or wait
        wait_seconds: how long to wait for the cluster when if_busy is wait
    """
    logger = get_run_logger()
    config = unset_if_empty(config)
    if config:
        spec = load_spec(flow_config_path(config))
        if spec.name != cluster_name(cluster):
            raise ValueError(f"{config} declares cluster {spec.name}, not {cluster}")
    else:
        recalled = recall_spec(cluster_name(cluster))
        if recalled.warning:
            logger.warning(recalled.warning)
        spec = recalled.spec
    if spec is None:
        logger.info("%s: drover knows no such cluster (%s); nothing to destroy", cluster,
                    known_list())
        return {"cluster": cluster, "deleted": []}
    if dry_run:
        names = sorted(observe_cluster(spec).nodes)
        for name in names:
            logger.info("dry run: %s: would delete %s", cluster, name)
        publish_dry_run("destroy", cluster, [f"{cluster}: will delete {name}" for name in names]
                        + [f"{cluster}: will forget its secrets and client configs"])
        return {"cluster": cluster, "deleted": [], "would_delete": names}
    if not confirm:
        raise ValueError(f"{cluster}: destroying deletes every node and the cluster's "
                         "secrets; pass confirm=true to go ahead")
    with hold_cluster(spec, "destroy", if_busy=if_busy, wait_seconds=wait_seconds):
        snapshot_etcd(spec)
        deleted = delete_nodes(spec)
        forget_cluster(cluster)
    logger.info("%s: destroyed (%d nodes deleted)", cluster, len(deleted))
    return {"cluster": cluster, "deleted": deleted}
