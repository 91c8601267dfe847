"""The steps of replacing a node (nodes are cattle), as plain functions tasks wrap.

Order matters for etcd: a control plane's member is removed before its successor
joins, so the cluster never holds a member that will not come back; the old VM is
deleted only once the new node is Ready (and, for a control plane, etcd is full
and healthy again).
"""

from __future__ import annotations

from drover import retry
from drover.deploy import Infra, configure_node, observe, provision_node, resolve_image
from drover.kube import drain_node
from drover.plan import ReplacePlan, plan_replacement
from drover.spec import NodeSpec
from drover.upgrade import wait_back, wait_etcd_full


def plan(infra: Infra, node: str) -> ReplacePlan:
    health = infra.talos.cluster_health()
    return plan_replacement(infra.spec, observe(infra),
                            {m.node: m.healthy for m in health.members}, node)


def retire(infra: Infra, replacement: ReplacePlan) -> None:
    """Cordon and drain the old node (when it answers), then remove its etcd member."""
    if replacement.reachable:
        drain_node(infra.kube, replacement.old, infra.clock,
                   infra.spec.spec.upgrade.drain_timeout_seconds)
    if replacement.control_plane:
        old = infra.provider.get_node(replacement.old)
        retry.call(retry.api_call(infra.clock), infra.talos.remove_member, old)


def bring_up(infra: Infra, new: NodeSpec, control_plane: bool,
             run_id: str | None = None) -> float:
    """Provision and configure the successor; wait until Ready (and etcd full for a CP)."""
    started = infra.clock.now()
    provision_node(infra, new, resolve_image(infra), run_id)
    configure_node(infra, new)
    timeouts = infra.spec.spec.deployment.timeouts
    wait_back(infra, new.name, timeouts.health_seconds, "replace")
    if control_plane:
        wait_etcd_full(infra, new.name, timeouts.health_seconds)
    return infra.clock.now() - started
