"""The steps of a rolling upgrade, one node at a time, as plain functions tasks wrap.

Per node: pre-check (etcd full and healthy for a control plane; the API up) →
cordon → drain → upgrade (new installer image, data kept) → wait until it is back
on the new version and Ready → uncordon → post-check. A node that comes back on
its old version was rolled back by Talos (A/B images): it is uncordoned and the
step fails, so the run stops with the rest untouched.
"""

from __future__ import annotations

from drover import retry
from drover.deploy import Infra
from drover.errors import QuorumError, StageTimeout, UpgradeFailed
from drover.kube import drain_node
from drover.lab.clock import Clock
from drover.machineconfig import installer_image
from drover.talos import ClusterHealth, MachineStatus


def installer_for(infra: Infra, talos_version: str) -> str:
    """The installer image of the cluster's schematic at `talos_version`, prepared for use."""
    return infra.provider.prepare_image(installer_image(
        infra.spec.with_overrides(talos_version=talos_version)))


def check_etcd(infra: Infra, node: str, health: ClusterHealth | None = None) -> None:
    """Refuse to touch a control plane unless every etcd member is healthy and present."""
    health = health or infra.talos.cluster_health()
    want = infra.spec.spec.control_plane.count
    if health.quorum_lost or health.healthy_members() != len(health.members) \
            or len(health.members) != want:
        raise QuorumError(f"{node}: refusing: etcd has {health.healthy_members()} healthy of "
                          f"{len(health.members)} members, {want} expected; every member "
                          "must be healthy before a control plane goes down")


def wait_etcd_full(infra: Infra, node: str, timeout: float) -> None:
    want = infra.spec.spec.control_plane.count

    def full() -> bool | None:
        health = infra.talos.cluster_health()
        return (health.healthy_members() == len(health.members) == want) or None

    infra.wait(full, timeout, lambda: StageTimeout(
        "post-check", node, f"etcd not back to {want} healthy members within {timeout:.0f}s"),
        node=node)


def wait_back(infra: Infra, name: str, timeout: float, stage: str) -> MachineStatus:
    """Wait until the node runs again and is Ready."""
    node = infra.provider.get_node(name)

    def back() -> MachineStatus | None:
        status = infra.talos.machine_status(node)
        return status if status.stage == "running" and status.ready else None

    return infra.wait(back, timeout, lambda: StageTimeout(  # type: ignore[return-value]
        stage, name, f"not back and Ready within {timeout:.0f}s "
        f"(still {infra.talos.machine_status(node).stage})"), node=name)


def upgrade_node(infra: Infra, name: str, image: str, talos_version: str) -> float:
    """Upgrade one node to `talos_version`; return its seconds. See the module docstring."""
    clock: Clock = infra.clock
    started = clock.now()
    timeouts = infra.spec.spec.deployment.timeouts
    node = infra.provider.get_node(name)
    health = infra.talos.cluster_health()  # one read serves both pre-checks
    if node.role == "controlplane":
        check_etcd(infra, name, health)
    if not health.api_up:
        raise StageTimeout("pre-check", name, "the Kubernetes API is down; not upgrading")
    drain_node(infra.kube, name, clock, infra.spec.spec.upgrade.drain_timeout_seconds)
    retry.call(retry.api_call(clock), infra.talos.upgrade, node, image)
    status = wait_back(infra, name, timeouts.configure_seconds, "upgrade")
    infra.kube.set_cordoned(name, False)
    if status.talos_version != talos_version:
        raise UpgradeFailed(f"{name}: upgrade to {talos_version} failed; Talos rolled it back "
                            f"to {status.talos_version} and it is serving again; the run stops "
                            "here and no other node was touched after it")
    if node.role == "controlplane":
        wait_etcd_full(infra, name, timeouts.health_seconds)
    return clock.now() - started
