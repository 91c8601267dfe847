"""Task: resolve and prepare the boot/installer image for the cluster."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from drover import deploy
from drover.spec import ClusterSpec, NodeSpec
from tasks import only_transient


@task(name="resolve-image", cache_policy=NONE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=only_transient)
def resolve_image(spec: ClusterSpec) -> str:
    image = deploy.resolve_image(deploy.Infra.open(spec))
    get_run_logger().info("%s: image %s", spec.name, image)
    return image


@task(name="preflight", cache_policy=NONE)
def preflight(spec: ClusterSpec, nodes: list[NodeSpec], image: str) -> None:
    """Fail at once, creating nothing, when the infrastructure cannot take the new nodes."""
    deploy.preflight(deploy.Infra.open(spec), nodes, image)
    get_run_logger().info("%s: pre-flight: room for %d new node(s)", spec.name, len(nodes))
