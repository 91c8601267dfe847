"""The talosctl backend: drover's TalosAPI driven through the official talosctl CLI.

Every call names its target itself: `--talosconfig <cluster dir>/talosconfig`, and `--nodes`
and `--endpoints` set to the node's own address (or, for cluster-wide commands, a control plane
whose etcd is healthy), so nothing rests on a talosconfig's defaults, the way configs reach the
wrong machine. Resources are read with `get <type> -o json` (a stream of one object per resource,
each with a "node" key, not an array); text commands are judged by their exit code. Each call
runs in its own process group under a deadline and is killed with its children when it passes
it. Transient gRPC failures raise TransientError, retried here by drover.retry.api_call on the
injected clock; reads made by polls (machine_status, cluster_health) are not retried, because
the poll is the retry. Machine configs reach talosctl in a 0600 file, never on argv, and stderr
is scrubbed of anything that looks like a key, certificate or token before an error carries it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from drover.errors import (
    DroverError,
    NotInMaintenance,
    QuorumError,
    StageTimeout,
    TalosError,
    TransientError,
)
from drover.home import cluster_dir
from drover.lab.clock import Clock, SystemClock
from drover.machineconfig.secrets import from_yaml, write_talosconfig
from drover.providers.base import Node, Provider
from drover.retry import api_call, call
from drover.spec import ClusterSpec
from drover.talos.base import (
    ClusterHealth,
    EtcdMember,
    MachineStatus,
    SnapshotInfo,
    TalosAPI,
    register,
)
from drover.talos.talosctl_cli import (  # noqa: F401 (re-exported: the backend's vocabulary)
    _QUORUM,
    _TLS,
    _TRANSIENT,
    INSTALL_HINT,
    UNREACHABLE,
    CertificateMismatch,
    ClusterMember,
    EtcdMemberRow,
    T,
    TalosctlNotFound,
    Timeouts,
    _failure,
    _kill_group,
    classify,
    execute,
    find_talosctl,
    image_tag,
    normalize_member_id,
    parse_etcd_members,
    parse_json_stream,
    parse_service_state,
    parse_snapshot_info,
    private_file,
    scrub,
    server_version,
    upgrade_steps,
    version_tuple,
)

log = logging.getLogger(__name__)


class Talosctl(TalosAPI):
    """TalosAPI over talosctl. `nodes` lists the cluster's machines (default: its provider's);
    `clock` times the retries (tests pass a ManualClock, so nothing really sleeps)."""

    def __init__(self, spec: ClusterSpec, *, nodes: Callable[[], list[Node]] | None = None,
                 clock: Clock | None = None, timeouts: Timeouts | None = None,
                 attempts: int = 5) -> None:
        self.spec = spec
        self.executable = find_talosctl(spec)
        self.talosconfig = cluster_dir(spec.name) / "talosconfig"
        self.clock = clock or SystemClock()
        self.timeouts = timeouts or Timeouts()
        self.attempts = attempts
        self._nodes = nodes or self._provider_nodes
        self._provider: Provider | None = None

    # ---- plumbing ------------------------------------------------------------------------
    def _provider_nodes(self) -> list[Node]:
        if self._provider is None:
            from drover.providers import open_provider
            self._provider = open_provider(self.spec)
        return self._provider.list_nodes()

    def _ensure_talosconfig(self, insecure: bool) -> None:
        """Issue a talosconfig from the cluster's secrets bundle if there is none yet."""
        if self.talosconfig.exists():
            return
        secrets = self.talosconfig.with_name("secrets.yaml")
        if secrets.exists():
            write_talosconfig(self.talosconfig.parent, self.spec.name, [], [],
                              from_yaml(secrets.read_text()))
            log.info("%s: issued %s from the secrets bundle", self.spec.name, self.talosconfig)
        elif not insecure:
            raise TalosError(f"{self.spec.name}: no talosconfig at {self.talosconfig} and no "
                             "secrets bundle to issue one from; deploy the cluster with drover, "
                             "or put its talosconfig there (mode 0600)")

    def _run(self, node: Node, words: Sequence[str], flags: Sequence[str] = (), *,
             timeout: float | None = None, insecure: bool = False) -> str:
        """Run `talosctl <words> <flags>` against `node` once: its stdout, or an error."""
        where = f"{node.name} ({node.address or 'no address'})"
        command = "talosctl " + " ".join(words)
        if not node.address:
            raise TransientError(f"{where}: {command}: the node has no address yet")
        self._ensure_talosconfig(insecure)
        argv = [self.executable, *words, *flags, *(["--insecure"] if insecure else []),
                "--talosconfig", str(self.talosconfig),
                "--nodes", node.address, "--endpoints", node.address]
        log.debug("%s: %s", node.name, " ".join(argv[1:]))
        code, out, err = execute(argv, timeout or self.timeouts.read, where, command)
        if code != 0:
            raise _failure(where, command, code, err)
        return out

    def _retrying(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return call(api_call(self.clock, attempts=self.attempts), fn, *args, **kwargs)

    @staticmethod
    def _quietly(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """fn(...), or None when the node does not answer or refuses (a probe)."""
        try:
            return fn(*args, **kwargs)
        except (TalosError, TransientError, StageTimeout, QuorumError) as exc:
            log.debug("probe failed: %s", exc)
            return None

    def _get(self, node: Node, resource: str, *, insecure: bool = False) -> list[dict[str, Any]]:
        return parse_json_stream(self._run(node, ["get", resource], ["-o", "json"],
                                           insecure=insecure))

    def _control_planes(self) -> list[Node]:
        return sorted((n for n in self._nodes() if n.role == "controlplane"),
                      key=lambda n: n.name)

    # ---- reads -----------------------------------------------------------------------------
    def _server_version(self, node: Node) -> str:
        tag = server_version(self._run(node, ["version"], ["--short"]))
        if tag is None:
            raise TalosError(f"{node.name}: talosctl version printed no server Tag")
        return tag

    def version(self, node: Node) -> str:
        """The Talos version `node` runs, e.g. v1.13.9."""
        return self._retrying(self._server_version, node)

    def _kubelet_version(self, node: Node) -> str | None:
        docs = self._get(node, "kubeletspec")
        tag = image_tag(str(docs[0].get("spec", {}).get("image", ""))) if docs else None
        return tag.removeprefix("v") if tag else None

    def machine_config(self, node: Node) -> str | None:
        """`get machineconfig -o json`: the spec of the v1alpha1 resource is the config text."""
        docs = self._retrying(self._get, node, "machineconfig")
        spec = next((d.get("spec") for d in docs
                     if d.get("metadata", {}).get("id") == "v1alpha1"), None)
        return spec if isinstance(spec, str) else None

    def machine_status(self, node: Node) -> MachineStatus:
        """Stage and readiness from `get machinestatus`, versions from `version` and the
        kubelet spec. `ready` is Talos's own verdict (its unmet conditions include the
        Kubernetes node). A node that answers only insecurely has no config of ours yet
        (maintenance mode); one that does not answer at all is `unreachable`."""
        try:
            docs, insecure = self._get(node, "machinestatus"), False
        except CertificateMismatch:
            try:  # not our CA: a node in maintenance mode answers only insecurely
                docs, insecure = self._get(node, "machinestatus", insecure=True), True
            except CertificateMismatch as exc:
                raise TalosError(f"{node.name}: answers neither with the cluster's CA nor in "
                                 f"maintenance mode: not this cluster's node? ({exc})") from exc
            except (TransientError, StageTimeout):
                return UNREACHABLE
        except (TransientError, StageTimeout) as exc:
            log.info("%s: Talos API not answering: %s", node.name, exc)
            return UNREACHABLE
        spec = next((d.get("spec") or {} for d in docs), {})
        stage = str(spec.get("stage") or "unknown")
        if insecure:
            return MachineStatus(stage, stage != "maintenance", False, None)
        running = stage == "running"
        return MachineStatus(
            stage, True, running and bool((spec.get("status") or {}).get("ready")),
            self._quietly(self._server_version, node) if running else None,
            self._quietly(self._kubelet_version, node) if running else None)

    def _local_member_id(self, node: Node) -> str | None:
        """`get etcdmember`: the node's own member, present only while its etcd is healthy."""
        docs = self._get(node, "etcdmember")
        member_id = str((docs[0].get("spec") or {}).get("memberID") or "") if docs else ""
        return normalize_member_id(member_id) if member_id else None

    def _etcd_members(self, node: Node) -> list[EtcdMemberRow]:
        return parse_etcd_members(self._run(node, ["etcd", "members"]))

    def _etcd_view(self) -> tuple[list[EtcdMember], list[EtcdMemberRow], dict[str, str]]:
        """(members, their rows, {control plane: its healthy local member ID})."""
        cps = self._control_planes()
        # in parallel: a node that hangs costs one deadline, not one per node after it
        with ThreadPoolExecutor(max_workers=max(1, len(cps))) as pool:
            found = list(pool.map(lambda cp: self._quietly(self._local_member_id, cp), cps))
        local = {cp.name: mid for cp, mid in zip(cps, found, strict=True) if mid is not None}
        rows = None
        for cp in sorted(cps, key=lambda c: c.name not in local):  # healthy ones first
            rows = self._quietly(self._etcd_members, cp)
            if rows is not None:
                break
        if rows is None:
            rows = [EtcdMemberRow(mid, name, (), False) for name, mid in local.items()]
        by_id = {mid: name for name, mid in local.items()}
        by_address = {n.address: n.name for n in cps}

        def name_of(row: EtcdMemberRow) -> str:
            return by_id.get(row.member_id) or row.hostname or next(
                (by_address[h] for h in row.peer_hosts() if h in by_address), row.member_id)

        members = [EtcdMember(name_of(r), r.member_id, r.member_id in by_id) for r in rows]
        return members, rows, local

    def _healthy_control_plane(self, purpose: str, exclude: str | None = None,
                               local: dict[str, str] | None = None,
                               error: type[DroverError] = TalosError) -> Node:
        local = self._etcd_view()[2] if local is None else local
        found = next((cp for cp in self._control_planes()
                      if cp.name in local and cp.name != exclude), None)
        if found is None:
            raise error(f"{self.spec.name}: no control plane with healthy etcd answers"
                              f"{f' besides {exclude}' if exclude else ''}; cannot {purpose}")
        return found

    def _api_up(self, via: Node) -> bool:
        nodes, wait = self._nodes(), self.timeouts.health_wait
        flags = ["--server", f"--wait-timeout={wait:g}s", "--control-plane-nodes",
                 ",".join(n.address for n in nodes if n.role == "controlplane" and n.address)]
        workers = [n.address for n in nodes if n.role != "controlplane" and n.address]
        if workers:
            flags += ["--worker-nodes", ",".join(workers)]
        return self._quietly(self._run, via, ["health"], flags,
                             timeout=wait + self.timeouts.read) is not None

    def cluster_health(self) -> ClusterHealth:
        """etcd as its control planes report it; api_up means `health --server` passes.

        Learners do not vote. A member counts as healthy while its node reports its own
        etcdmember (Talos keeps that resource only while the etcd service is healthy, which
        needs a leader), so without quorum no member is healthy; talosctl cannot tell a
        majority away for a reboot from one lost for good. A lone member that is not healthy
        is not called lost: right after bootstrap it is not healthy yet either.
        """
        members, rows, local = self._etcd_view()
        voting = [m for m, r in zip(members, rows, strict=True) if not r.learner]
        quorum_lost = len(voting) > 1 and not any(m.healthy for m in voting)
        via = next((cp for cp in self._control_planes() if cp.name in local), None)
        return ClusterHealth(bool(rows), via is not None and self._api_up(via), quorum_lost,
                             members)

    def discovered_members(self, via: Node | None = None) -> list[ClusterMember]:
        """The machines cluster discovery knows (`get members`), through `via` or a healthy CP."""
        via = via or self._healthy_control_plane("read cluster members")
        return [ClusterMember(str(s.get("hostname", "")), tuple(s.get("addresses") or ()),
                              str(s.get("machineType", "")))
                for s in (d.get("spec") or {} for d in self._retrying(self._get, via,
                                                                       "members"))]

    # ---- changes ---------------------------------------------------------------------------
    def apply_config(self, node: Node, config: str, insecure: bool,
                     mode: str = "no-reboot") -> None:
        with private_file(config, self.talosconfig.parent) as path:
            self._retrying(self._apply_config, node, path, insecure, mode)

    def _apply_config(self, node: Node, path: Path, insecure: bool, mode: str) -> None:
        if insecure:
            self._require_maintenance(node)
        try:
            self._run(node, ["apply-config"], ["--file", str(path)]
                      + ([] if insecure else ["--mode", mode]), insecure=insecure,
                      timeout=self.timeouts.change)
        except CertificateMismatch as exc:
            if insecure:
                raise NotInMaintenance(f"{node.name}: left maintenance mode meanwhile: {exc}") \
                    from exc
            raise TalosError(f"{node.name}: does not present the cluster's certificate: it is "
                             "in maintenance mode (apply its first config insecurely) or not "
                             f"this cluster's node ({exc})") from exc
        log.info("%s: machine config applied%s", node.name, " (maintenance)" if insecure else "")

    def _require_maintenance(self, node: Node) -> None:
        """Send a config unauthenticated only to a node that says it is in maintenance mode."""
        try:
            docs = self._get(node, "machinestatus", insecure=True)
        except CertificateMismatch as exc:
            raise NotInMaintenance(f"{node.name}: node already has a config; the insecure "
                                   "maintenance API is closed (use the talosconfig)") from exc
        stage = next((str((d.get("spec") or {}).get("stage")) for d in docs), "unknown")
        if stage != "maintenance":
            raise NotInMaintenance(f"{node.name}: node is {stage}, not in maintenance mode; "
                                   "refusing to send its config insecurely")

    def bootstrap(self, node: Node) -> None:
        self._retrying(self._run, node, ["bootstrap"], timeout=self.timeouts.change)
        log.info("%s: etcd bootstrapped", node.name)

    def upgrade(self, node: Node, image: str) -> None:
        self._retrying(self._upgrade, node, image)

    def _upgrade(self, node: Node, image: str) -> None:
        current = self._server_version(node)
        if image_tag(image) == current:
            log.info("%s: already runs %s; nothing to upgrade", node.name, current)
            return
        if node.role == "controlplane":
            self._require_etcd_healthy(node)
        for words, flags in upgrade_steps(current, image):
            log.info("%s: talosctl %s (from %s)", node.name, " ".join(words), current)
            self._run(node, words, flags, timeout=self.timeouts.reboot if words == ["reboot"]
                      else self.timeouts.upgrade)

    def _require_etcd_healthy(self, node: Node) -> None:
        members = self._etcd_view()[0]
        sick = [m.node for m in members if not m.healthy]
        if not members or sick:
            raise QuorumError(f"{node.name}: refusing to take down a control plane: etcd has "
                              f"{len(members) - len(sick)} healthy of {len(members)} members"
                              f"{f' ({sick[0]} is not healthy)' if sick else ''}; all members "
                              "must be healthy")

    def upgrade_kubernetes(self, version: str) -> list[str]:
        via = self._healthy_control_plane("upgrade Kubernetes")
        self._retrying(self._run, via, ["upgrade-k8s"], ["--to", version.removeprefix("v")],
                       timeout=self.timeouts.upgrade_kubernetes)
        return sorted(m.hostname for m in self.discovered_members(via) if m.hostname)

    def remove_member(self, node: Node) -> None:
        self._retrying(self._remove_member, node)

    def _remove_member(self, node: Node) -> None:
        """By ID, through another control plane; a node that is no member is left alone."""
        _, rows, local = self._etcd_view()
        via = self._healthy_control_plane(f"remove {node.name}'s etcd member", node.name, local,
                                          QuorumError)
        own = local.get(node.name)
        member = next((r for r in rows if r.member_id == own), None) or next(
            (r for r in rows if r.hostname == node.name), None) or next(
            (r for r in rows if node.address in r.peer_hosts()), None)
        if member is None:
            log.info("%s: not an etcd member; nothing to remove", node.name)
            return
        self._run(via, ["etcd", "remove-member", member.member_id],
                  timeout=self.timeouts.change)
        log.info("%s: etcd member %s removed through %s", node.name, member.member_id, via.name)

    def etcd_leave(self, node: Node) -> None:
        """The node leaves etcd itself (prefer this to remove_member while it still runs)."""
        self._retrying(self._run, node, ["etcd", "leave"], timeout=self.timeouts.change)

    def reset(self, node: Node, graceful: bool = True, reboot: bool = False,
              wipe: Sequence[str] = ()) -> None:
        """Wipe the node (graceful: cordon, drain and leave etcd first); does not wait for it.

        `wipe` names system partitions (STATE, EPHEMERAL) instead of the whole disk.
        """
        flags = [f"--graceful={str(graceful).lower()}", f"--reboot={str(reboot).lower()}",
                 "--wait=false"]
        for label in wipe:
            flags += ["--system-labels-to-wipe", label]
        self._retrying(self._run, node, ["reset"], flags, timeout=self.timeouts.reset)

    # ---- etcd disaster recovery -------------------------------------------------------------
    def etcd_snapshot(self, node: Node, path: Path) -> SnapshotInfo:
        """`etcd snapshot <path>` through `node`; the caller picks the folder (0700) and mode."""
        path = Path(path)
        out = self._retrying(self._run, node, ["etcd", "snapshot", str(path)],
                             timeout=self.timeouts.snapshot)
        size = path.stat().st_size if path.exists() else 0
        if size == 0:
            raise TalosError(f"{node.name}: talosctl etcd snapshot left no data in {path}")
        info = parse_snapshot_info(out, size)
        log.info("%s: etcd snapshot saved to %s (%s)", node.name, path, info.describe())
        return info

    def etcd_state(self, node: Node) -> str:
        """A probe, not retried (the poll that calls it is the retry)."""
        return parse_service_state(self._run(node, ["service", "etcd"]))

    def reset_etcd(self, node: Node) -> None:
        self.reset(node, graceful=False, reboot=True, wipe=["EPHEMERAL"])
        log.info("%s: EPHEMERAL wiped (etcd data gone); rebooting", node.name)

    def recover_etcd(self, node: Node, snapshot: Path) -> None:
        self._retrying(self._run, node, ["bootstrap"], [f"--recover-from={snapshot}"],
                       timeout=self.timeouts.change)
        log.info("%s: etcd bootstrapped from the snapshot %s", node.name, snapshot)

    def kubeconfig(self, path: Path | str) -> Path:
        """Write the cluster's admin kubeconfig to `path` (replacing it, never merging), 0600."""
        path = Path(path)
        via = self._healthy_control_plane("fetch a kubeconfig")
        self._retrying(self._run, via, ["kubeconfig", str(path)], ["--force", "--merge=false"],
                       timeout=self.timeouts.change)
        if path.exists():
            path.chmod(0o600)
        return path


register("talosctl")(Talosctl)
