"""The steps of `drover apply` beyond a deploy's, as plain functions the tasks wrap: read
what each node runs, plan against the file, remove surplus nodes (etcd member first for a
control plane, never losing quorum), and apply config changes with the mode they need
(a node that must reboot is drained first and waited for, like an upgrade).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from drover import retry
from drover.converge import (
    ApplyPlan,
    NodeChange,
    config_changes,
    file_behind,
    reconfigurations,
    surplus,
)
from drover.deploy import Infra, observe
from drover.errors import QuorumError, StageTimeout
from drover.files import write_private
from drover.home import cluster_dir
from drover.kube import drain_node
from drover.machineconfig import load_secrets, render_node_yaml
from drover.plan import plan_deploy, plan_upgrade, refuse_downgrade
from drover.statefile import read_private
from drover.upgrade import wait_back

OVERRIDES = "overrides.json"


def overrides(cluster: str) -> list[dict[str, str]]:
    """The imperative version overrides made on the cluster (drover upgrade --talos-version)."""
    try:
        return list(json.loads(read_private(cluster_dir(cluster) / OVERRIDES, "overrides")))
    except FileNotFoundError:
        return []


def record_override(cluster: str, field: str, value: str, by: str) -> None:
    """Note that `by` set `field` to `value` outside the file, for apply and status to say."""
    entries = overrides(cluster) + [{"field": field, "value": value, "by": by,
                                     "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}]
    write_private(cluster_dir(cluster) / OVERRIDES, json.dumps(entries[-50:], indent=2))


def plan(infra: Infra, allow_downgrade: bool = False) -> ApplyPlan:
    """Everything that differs between the file and the cluster, in the order apply acts."""
    spec = infra.spec
    observed = observe(infra)
    deploy = plan_deploy(spec, observed)
    versions = spec.spec
    notes = [] if allow_downgrade else file_behind(
        observed, versions.talos.version, versions.kubernetes.version, overrides(spec.name))
    if notes:
        return ApplyPlan(deploy, notes=notes)
    refuse_downgrade(spec.name, observed, versions.talos.version,
                     versions.kubernetes.version, allow_downgrade)
    keep = [name for name, node in observed.nodes.items()
            if name not in deploy.unexpected and node.configured and node.stage == "running"]
    reconfigure: list[NodeChange] = []
    if keep:
        secrets = load_secrets(cluster_dir(spec.name))
        nodes = {n.name: n for n in infra.provider.list_nodes()}
        running = {name: infra.talos.machine_config(nodes[name]) for name in keep}
        # the upgrade changes versions; compare configs at the version each node runs
        desired = {name: render_node_yaml(
            spec.with_overrides(observed.nodes[name].talos_version or None),
            spec.node_named(name), secrets) for name in keep}
        reconfigure = reconfigurations(running, desired, versions.talos.version)
    upgrade = plan_upgrade(observed, versions.talos.version, versions.kubernetes.version,
                           spec.spec.upgrade.max_unavailable) if observed.bootstrapped else None
    return ApplyPlan(deploy, surplus(observed, deploy), reconfigure, upgrade)


def remove_node(infra: Infra, name: str) -> None:
    """Drain (when it runs), remove its etcd member (a control plane; refused when the
    members left could not keep quorum), delete it, and for a control plane wait until every
    member left is healthy."""
    node = infra.provider.get_node(name)
    status = infra.talos.machine_status(node)
    if status.stage == "running":
        drain_node(infra.kube, name, infra.clock, infra.spec.spec.upgrade.drain_timeout_seconds)
    if node.role == "controlplane":
        health = infra.talos.cluster_health()
        left = [m for m in health.members if m.node != name]
        if left and sum(m.healthy for m in left) < len(left) // 2 + 1:
            raise QuorumError(f"{name}: refusing to remove: the {len(left)} members left "
                              f"would have {sum(m.healthy for m in left)} healthy, and quorum "
                              f"needs {len(left) // 2 + 1}")
        retry.call(retry.api_call(infra.clock), infra.talos.remove_member, node)
    infra.provider.delete_node(name)
    if node.role == "controlplane":
        wait_members_healthy(infra, name)


def wait_members_healthy(infra: Infra, after: str) -> None:
    timeout = infra.spec.spec.deployment.timeouts.health_seconds

    def healthy() -> bool | None:
        health = infra.talos.cluster_health()
        ok = health.members and health.healthy_members() == len(health.members)
        return (ok and health.api_up) or None

    infra.wait(healthy, timeout, lambda: StageTimeout(
        "post-check", after, f"etcd members not all healthy within {timeout:.0f}s"))


def reconfigure_node(infra: Infra, change: NodeChange) -> float:
    """Apply the node's new config; one that needs a reboot is drained first, rebooted by
    Talos, and waited for (Ready, uncordoned; a control plane: etcd healthy again)."""
    started = infra.clock.now()
    spec = infra.spec
    node = infra.provider.get_node(change.node)
    config = render_node_yaml(spec, spec.node_named(change.node),
                              load_secrets(cluster_dir(spec.name)))
    if change.reboot:
        if node.role == "controlplane":
            health = infra.talos.cluster_health()
            if health.healthy_members() != len(health.members):
                raise QuorumError(f"{change.node}: refusing to reboot: etcd has "
                                  f"{health.healthy_members()} healthy of "
                                  f"{len(health.members)} members")
        drain_node(infra.kube, change.node, infra.clock, spec.spec.upgrade.drain_timeout_seconds)
    retry.call(retry.api_call(infra.clock), infra.talos.apply_config, node, config,
               insecure=False, mode="reboot" if change.reboot else "no-reboot")
    if change.reboot:
        wait_back(infra, change.node, spec.spec.deployment.timeouts.configure_seconds, "apply")
        infra.kube.set_cordoned(change.node, False)
        if node.role == "controlplane":
            wait_members_healthy(infra, change.node)
    return infra.clock.now() - started


def drift(infra: Infra) -> dict[str, list[str]]:
    """Per node, how it differs from the spec drover holds for the cluster (its file as last
    applied): the versions it runs and the config fields it runs differently."""
    spec = infra.spec
    versions = spec.spec
    secrets = load_secrets(cluster_dir(spec.name))
    out: dict[str, list[str]] = {}
    for node in infra.provider.list_nodes():
        status = infra.talos.machine_status(node)
        if status.stage != "running" or not status.configured:
            continue
        found = []
        if status.talos_version and status.talos_version != versions.talos.version:
            found.append(f"spec.talos.version: runs {status.talos_version}, the spec says "
                         f"{versions.talos.version}")
        kubelet = (status.kubernetes_version or "").removeprefix("v")
        if kubelet and kubelet != versions.kubernetes.version.removeprefix("v"):
            found.append(f"spec.kubernetes.version: runs {kubelet}, the spec says "
                         f"{versions.kubernetes.version}")
        running = infra.talos.machine_config(node)
        if running is not None:
            desired = render_node_yaml(spec.with_overrides(status.talos_version or None),
                                       spec.node_named(node.name), secrets)
            found += [f"{c.path}: runs {c.old}, the spec says {c.new}"
                      for c in config_changes(running, desired)]
        if found:
            out[node.name] = found
    return out
