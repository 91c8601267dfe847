"""Tasks: cluster secrets, the machine-config push, and the one etcd bootstrap."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from drover import deploy
from drover.spec import ClusterSpec, NodeSpec
from tasks import Span, only_transient, span


@task(name="prepare-cluster-dir", cache_policy=NONE)
def prepare_cluster_dir(spec: ClusterSpec, nodes_exist: bool) -> None:
    """Generate the cluster's secrets before its first node only (never logged; files 0600;
    missing secrets of a cluster with nodes stop the run) and keep the spec."""
    deploy.prepare_cluster_dir(spec, nodes_exist)


@task(name="configure-node", task_run_name="configure-{node.name}", cache_policy=NONE,
      retries=2, retry_delay_seconds=5, retry_condition_fn=only_transient)
def configure_node(spec: ClusterSpec, node: NodeSpec) -> Span:
    """Push the node's machine config (if it has none) and wait until it runs it."""
    infra = deploy.Infra.open(spec)
    seconds = deploy.configure_node(infra, node)
    get_run_logger().info("%s: running its machine config after %.1fs", node.name, seconds)
    return span(infra, seconds)


@task(name="bootstrap-etcd", cache_policy=NONE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=only_transient)
def bootstrap_etcd(spec: ClusterSpec) -> Span:
    """Bootstrap etcd on the first running control plane, unless it was done before."""
    infra = deploy.Infra.open(spec)
    started = infra.clock.now()
    node = deploy.bootstrap_etcd(infra)
    logger = get_run_logger()
    if node:
        logger.info("%s: etcd bootstrapped", node)
    else:
        logger.info("%s: etcd already bootstrapped; skipped", spec.name)
    return span(infra, infra.clock.now() - started)


@task(name="write-client-configs", cache_policy=NONE)
def write_client_configs(spec: ClusterSpec) -> list[str]:
    paths = deploy.write_client_configs(deploy.Infra.open(spec))
    get_run_logger().info("%s: talosconfig and kubeconfig written (mode 0600)", spec.name)
    return paths
