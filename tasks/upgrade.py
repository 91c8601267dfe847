"""Tasks of a rolling upgrade: one node, the Kubernetes step, leftover cordons."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from drover import upgrade
from drover.deploy import Infra
from drover.spec import ClusterSpec
from tasks import only_transient


@task(name="upgrade-node", task_run_name="upgrade-{name}", cache_policy=NONE, retries=1,
      retry_delay_seconds=5, retry_condition_fn=only_transient)
def upgrade_node(spec: ClusterSpec, name: str, image: str, talos_version: str) -> float:
    logger = get_run_logger()
    logger.info("%s: cordon, drain, upgrade to %s", name, talos_version)
    seconds = upgrade.upgrade_node(Infra.open(spec), name, image, talos_version)
    logger.info("%s: on %s, Ready and uncordoned after %.1fs", name, talos_version, seconds)
    return seconds


@task(name="upgrade-kubernetes", cache_policy=NONE)
def upgrade_kubernetes(spec: ClusterSpec, version: str) -> list[str]:
    nodes = Infra.open(spec).talos.upgrade_kubernetes(version)
    get_run_logger().info("%s: Kubernetes %s on %d nodes", spec.name, version, len(nodes))
    return nodes


@task(name="uncordon-nodes", cache_policy=NONE)
def uncordon_nodes(spec: ClusterSpec, names: list[str]) -> None:
    infra = Infra.open(spec)
    for name in names:
        infra.kube.set_cordoned(name, False)
        get_run_logger().info("%s: uncordoned (left cordoned by a run that stopped)", name)
