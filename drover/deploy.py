"""The steps of a deployment, as plain functions the Prefect tasks wrap.

Each step is idempotent: observe, then act only on the difference, then wait
(with a timeout) until the node or cluster reaches the state the next step
needs. Waits sleep on the infrastructure's clock until its next change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from drover import ledger, retry
from drover.errors import (
    AlreadyBootstrapped,
    NodeFailed,
    PreflightFailed,
    QuorumError,
    StageTimeout,
    TalosError,
)
from drover.home import cluster_dir, remember_spec
from drover.kube import KubeAPI, LabKube, open_kube
from drover.lab.clock import Clock
from drover.lab.datacenter import Datacenter
from drover.machineconfig import (
    ensure_secrets,
    installer_image,
    load_secrets,
    render_node_yaml,
    write_kubeconfig,
    write_talosconfig,
)
from drover.plan import Observed, ObservedNode, missing_nodes, plan_deploy
from drover.providers import Node, Provider, open_provider
from drover.providers.lab import LabProvider
from drover.spec import ClusterSpec, NodeSpec
from drover.talos import ClusterHealth, TalosAPI, open_talos
from drover.talos.lab import LabTalos

BOOTED = ("maintenance", "installing", "rebooting", "running")


@dataclass
class Infra:
    """The backends one cluster's spec selects, sharing one clock."""

    spec: ClusterSpec
    provider: Provider
    talos: TalosAPI
    kube: KubeAPI

    @property
    def clock(self) -> Clock:
        return self.provider.clock

    @classmethod
    def open(cls, spec: ClusterSpec) -> Infra:
        return cls(spec, open_provider(spec), open_talos(spec), open_kube(spec))

    @classmethod
    def on_lab(cls, spec: ClusterSpec, datacenter: Datacenter) -> Infra:
        """Every backend on one given lab datacenter (tests and benchmarks pick its clock)."""
        return cls(spec, LabProvider(spec, datacenter), LabTalos(spec, datacenter),
                   LabKube(spec, datacenter))

    def wait(self, check: Callable[[], object | None], timeout: float,
             on_timeout: Callable[[], Exception], node: str | None = None) -> object:
        """Poll `check` until it returns something, sleeping until the provider's next change;
        with `node`, only changes that concern that node wake it (not every node's boot)."""
        return retry.poll_until(check, clock=self.clock, timeout=timeout, on_timeout=on_timeout,
                                next_change=lambda: self.provider.next_change_at(node))


def observe(infra: Infra) -> Observed:
    nodes = {}
    for node in infra.provider.list_nodes():
        status = infra.talos.machine_status(node)
        cordoned = status.stage == "running" and infra.kube.cordoned(node.name)
        nodes[node.name] = ObservedNode(node.name, node.role, node.pool, status.stage,
                                        status.configured, status.ready, node.address,
                                        status.talos_version, status.kubernetes_version,
                                        cordoned)
    return Observed(nodes, infra.talos.cluster_health().bootstrapped)


def resolve_image(infra: Infra) -> str:
    """The installer image for the spec's schematic and Talos version, prepared for use."""
    return infra.provider.prepare_image(installer_image(infra.spec))


def preflight(infra: Infra, nodes: list[NodeSpec], image: str) -> None:
    """PreflightFailed listing every shortfall for creating `nodes`, before any is created."""
    problems = infra.provider.preflight(nodes, image) if nodes else []
    if problems:
        raise PreflightFailed(f"{infra.spec.name}: pre-flight: {'; '.join(problems)}; "
                              "nothing was created")


def provision_node(infra: Infra, node: NodeSpec, image: str, run_id: str | None = None) -> float:
    """Create the node (or find it) and wait until its Talos API answers; return seconds.

    With `run_id`, the creation is recorded first (drover/ledger.py), so the clean-up of a
    failed run deletes what this run created and nothing else.
    """
    started = infra.clock.now()
    if run_id is not None:
        ledger.record_created(infra.spec.name, node.name, run_id)
    created = infra.provider.create_node(node, image)
    timeout = infra.spec.spec.deployment.timeouts.provision_seconds

    def booted() -> Node | None:
        current = infra.provider.get_node(created.name)
        return current if infra.talos.machine_status(current).stage in BOOTED else None

    infra.wait(booted, timeout, lambda: StageTimeout(
        "provision", node.name, f"did not reach maintenance mode within {timeout:.0f}s "
        f"(still {infra.talos.machine_status(created).stage})"), node=node.name)
    return infra.clock.now() - started


def prepare_cluster_dir(spec: ClusterSpec, nodes_exist: bool = False) -> None:
    """Generate the cluster's secrets before its first deploy only (never while nodes exist,
    `nodes_exist` as observed), keep its spec, and write the admin kubeconfig, in
    $DROVER_HOME/clusters/<name>/ (files 0600)."""
    folder = cluster_dir(spec.name)
    secrets = ensure_secrets(folder, nodes_exist)
    remember_spec(spec)
    write_kubeconfig(folder, spec.name, spec.spec.kubernetes.endpoint, secrets)


def configure_node(infra: Infra, node: NodeSpec) -> float:
    """Push the node's machine config if it has none, then wait until it runs it."""
    started = infra.clock.now()
    secrets = load_secrets(cluster_dir(infra.spec.name))
    target = infra.provider.get_node(node.name)
    if not infra.talos.machine_status(target).configured:
        config = render_node_yaml(infra.spec, node, secrets)
        retry.call(retry.api_call(infra.clock), infra.talos.apply_config, target, config,
                   insecure=True)
    timeout = infra.spec.spec.deployment.timeouts.configure_seconds

    def running() -> bool | None:
        return infra.talos.machine_status(target).stage == "running" or None

    infra.wait(running, timeout, lambda: StageTimeout(
        "configure", node.name, f"not running its config within {timeout:.0f}s "
        f"(still {infra.talos.machine_status(target).stage})"), node=node.name)
    return infra.clock.now() - started


def bootstrap_etcd(infra: Infra) -> str | None:
    """Bootstrap etcd on the first running control plane, once; the node, or None if done."""
    if infra.talos.cluster_health().bootstrapped:
        return None
    control_planes = [n for n in infra.provider.list_nodes() if n.role == "controlplane"]
    first = next((n for n in control_planes
                  if infra.talos.machine_status(n).stage == "running"), None)
    if first is None:
        raise TalosError(f"{infra.spec.name}: no running control plane to bootstrap etcd on")
    try:
        retry.call(retry.api_call(infra.clock), infra.talos.bootstrap, first)
    except AlreadyBootstrapped:  # a parallel or crashed run got there first: that is success
        return None
    return first.name


@dataclass(frozen=True)
class Readiness:
    ready: list[str]
    waiting: list[str]
    health: ClusterHealth
    ready_after: dict[str, float] = field(default_factory=dict)  # seconds into the wait
    dead: list[str] = field(default_factory=list)    # died: no wait brings them back

    @property
    def total(self) -> int:
        return len(self.ready) + len(self.waiting)


def readiness(infra: Infra) -> Readiness:
    health = infra.talos.cluster_health()
    ready, waiting, dead = [], [], []
    have: dict[str, list[str]] = {p.name: [] for p in infra.spec.pools()}
    for node in infra.provider.list_nodes():
        if node.state == "dead":
            dead.append(node.name)
        if node.pool in have:
            have[node.pool].append(node.name)
            (ready if infra.talos.machine_status(node).ready else waiting).append(node.name)
    for pool, names in have.items():
        waiting += [n.name for n in missing_nodes(infra.spec, pool, names)]
    return Readiness(sorted(ready), sorted(waiting), health, dead=sorted(dead))


def wait_healthy(infra: Infra, on_progress: Callable[[Readiness], None] = lambda r: None
                 ) -> Readiness:
    """The health gate: etcd full and healthy, the API up, every declared node Ready."""
    want_members = infra.spec.spec.control_plane.count
    timeout = infra.spec.spec.deployment.timeouts.health_seconds
    last: list[Readiness] = []  # the previous observation, to report only changes
    started = infra.clock.now()
    ready_after: dict[str, float] = {}

    def healthy() -> Readiness | None:
        state = readiness(infra)
        dead = state.dead
        if dead:  # no wait brings these back; replacing them is a day-2 job
            raise NodeFailed(f"{dead[0]}: health: the node is dead ({len(dead)} dead in all: "
                             f"{', '.join(dead)}); replace it, or destroy and redeploy")
        for name in state.ready:
            ready_after.setdefault(name, infra.clock.now() - started)
        if state.health.quorum_lost:
            raise QuorumError(f"{infra.spec.name}: etcd lost quorum; restore it from the "
                              f"latest snapshot: drover recover {infra.spec.name}")
        if not last or (last[-1].ready, last[-1].health) != (state.ready, state.health):
            on_progress(state)
        last[:] = [state]
        ok = (state.health.api_up and not state.waiting
              and state.health.healthy_members() == len(state.health.members) == want_members)
        return replace(state, ready_after=dict(ready_after)) if ok else None

    def timed_out() -> Exception:
        state = last[-1] if last else readiness(infra)
        node = state.waiting[0] if state.waiting else infra.spec.name
        return StageTimeout("health", node, (
            f"cluster not healthy within {timeout:.0f}s: {len(state.ready)}/{state.total} "
            f"nodes Ready, etcd {state.health.healthy_members()}/{want_members} members, "
            f"API {'up' if state.health.api_up else 'down'}; waiting for "
            f"{', '.join(state.waiting) or 'etcd'}"))

    return infra.wait(healthy, timeout, timed_out)  # type: ignore[return-value]


def write_client_configs(infra: Infra) -> list[str]:
    """talosconfig and kubeconfig for the cluster (mode 0600); returns their paths."""
    folder = cluster_dir(infra.spec.name)
    secrets = load_secrets(folder)
    nodes = infra.provider.list_nodes()
    endpoints = [n.address for n in nodes if n.role == "controlplane"]
    talosconfig = write_talosconfig(folder, infra.spec.name, endpoints,
                                    [n.address for n in nodes], secrets)
    kubeconfig = write_kubeconfig(folder, infra.spec.name,
                                  infra.spec.spec.kubernetes.endpoint, secrets)
    return [str(talosconfig), str(kubeconfig)]


def destroy(infra: Infra, names: list[str] | None = None) -> list[str]:
    """Delete the named nodes (default: every node of the cluster, workers first, so etcd
    keeps its members as long as it can); returns what was deleted."""
    everything = names is None
    if names is None:
        nodes = infra.provider.list_nodes()
        batches = [[n.name for n in nodes if n.role != "controlplane"],
                   [n.name for n in nodes if n.role == "controlplane"]]
    else:
        batches = [names]
    for batch in batches:  # the provider may delete a batch at once
        if batch:
            infra.provider.delete_nodes(batch)
    names = [name for batch in batches for name in batch]
    # a whole cluster gone: also forget creations a killed run recorded but never made
    ledger.forget(infra.spec.name, None if everything else names)
    return names


def clean_up_failed(infra: Infra, run_id: str) -> list[str]:
    """After a failed fresh deploy: delete the nodes run `run_id` created, never another's."""
    return destroy(infra, ledger.created_by(infra.spec.name, run_id))


def converge(infra: Infra) -> Readiness:
    """Every deploy step in order, one node at a time, without Prefect: what the flow does,
    for tests, benchmarks and scripts that need a cluster up and do not time it."""
    prepare_cluster_dir(infra.spec)
    image = resolve_image(infra)
    plan = plan_deploy(infra.spec, observe(infra))
    for node in plan.create:
        provision_node(infra, node, image)
    for node in plan.configure:
        configure_node(infra, node)
    bootstrap_etcd(infra)
    return wait_healthy(infra)
