"""Task: create one node and wait until its Talos API answers in maintenance mode."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from drover import deploy
from drover.spec import ClusterSpec, NodeSpec
from tasks import Span, only_transient, span


@task(name="provision-node", task_run_name="provision-{node.name}", cache_policy=NONE,
      retries=3, retry_delay_seconds=5, retry_condition_fn=only_transient)
def provision_node(spec: ClusterSpec, node: NodeSpec, image: str, run_id: str) -> Span:
    """Create the node (recorded as this run's creation) and wait for maintenance mode;
    returns when it started and ended on the infrastructure's clock."""
    logger = get_run_logger()
    logger.info("%s: creating (%s, %d CPU, %d MiB)", node.name, node.role, node.size.cpus,
                node.size.memory_mib)
    infra = deploy.Infra.open(spec)
    seconds = deploy.provision_node(infra, node, image, run_id)
    logger.info("%s: in maintenance mode after %.1fs", node.name, seconds)
    return span(infra, seconds)
