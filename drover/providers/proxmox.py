"""The Proxmox VE provider: nodes are QEMU VMs on a Proxmox cluster, driven over its HTTP API.

It owns the API client (token header, TLS always verified), the VM lifecycle (clone
a template, or create a VM that boots the Talos ISO; configure; start; stop and
purge), waiting on every task UPID until it stops with an OK exit status, and a
node's address from the QEMU guest agent. A VM belongs to a cluster by its tags
(`drover;cluster-<name>`); its name is the node's name. 5xx answers and "can't lock
file" are TransientError, retried with jitter; other refusals are ProviderError
naming the call. The token secret is never logged nor put in an error.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

from drover import retry
from drover.errors import DroverError, NodeNotFound, ProviderError, StageTimeout, TransientError
from drover.lab.clock import Clock, SystemClock
from drover.provider_settings import ProxmoxProvider as ProxmoxSettings
from drover.providers.base import Node, Provider, register
from drover.spec import ClusterSpec, NodeSpec, split_node_name

log = logging.getLogger(__name__)

_LOCKED = re.compile(r"can't lock file|is locked \(", re.I)  # another task holds the VM's lock
_MISSING = re.compile(r"does not exist", re.I)
_TAKEN = re.compile(r"already exists", re.I)
_INSTALLER = re.compile(r"^(?P<host>[^/]+)/(?:[a-z0-9]+-)?installer(?P<sb>-secureboot)?/"
                        r"(?P<id>[0-9a-f]{64}):(?P<version>v[0-9A-Za-z.+-]+)$")
_SIZE = re.compile(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)")
_MAC = re.compile(r"=((?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})")
_GIB = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024 ** 3}


class _Missing(ProviderError):
    """Proxmox says the object does not exist (it answers 500, not 404)."""


class _TokenAuth(httpx.Auth):
    """`Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`; its repr hides the secret."""

    def __init__(self, token_id: str, secret: str) -> None:
        self.token_id, self._secret = token_id, secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"PVEAPIToken={self.token_id}={self._secret}"
        yield request

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***")

    def __repr__(self) -> str:
        return f"_TokenAuth({self.token_id!r}, secret=***)"


@dataclass
class _Endpoint:
    """What every provider on one Proxmox API shares in this process (each task opens its own)."""

    clones: threading.BoundedSemaphore
    lock: threading.Lock = field(default_factory=threading.Lock)
    reserved: set[int] = field(default_factory=set)  # VMIDs handed to creates still in flight


_ENDPOINTS: dict[tuple[str, int], _Endpoint] = {}
_ENDPOINTS_LOCK = threading.Lock()


def _endpoint(settings: ProxmoxSettings) -> _Endpoint:
    key = (settings.url.rstrip("/"), settings.max_parallel_clones)
    with _ENDPOINTS_LOCK:
        if key not in _ENDPOINTS:
            _ENDPOINTS[key] = _Endpoint(threading.BoundedSemaphore(settings.max_parallel_clones))
        return _ENDPOINTS[key]


@dataclass(frozen=True)
class _VM:
    vmid: int
    node: str
    name: str
    status: str
    tags: frozenset[str]
    template: bool = False

    @property
    def path(self) -> str:
        return f"/nodes/{self.node}/qemu/{self.vmid}"

    @classmethod
    def parse(cls, row: dict[str, Any]) -> _VM:
        tags = frozenset(t for t in re.split(r"[;,\s]+", str(row.get("tags") or "")) if t)
        return cls(int(row["vmid"]), str(row.get("node", "")), str(row.get("name", "")),
                   str(row.get("status", "unknown")), tags, bool(row.get("template")))


def _client(ca_file: str | None) -> httpx.Client:
    try:  # certificates and host names are always verified; ca_file only adds a private CA
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ProviderError(f"spec.provider.caFile: cannot load {ca_file!r}: {exc}") from None
    return httpx.Client(verify=context, timeout=httpx.Timeout(30.0, connect=10.0))


def _message(resp: httpx.Response) -> str:
    """Proxmox puts the reason in the status line; newer versions also in `message`/`errors`."""
    parts = [resp.reason_phrase]
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if body.get("message"):
            parts = [str(body["message"])]
        if isinstance(body.get("errors"), dict):
            parts += [f"{k}: {v}" for k, v in body["errors"].items()]
    return "; ".join(p.strip() for p in parts if p and p.strip()) or "no message"


def _boot_iso(image: str) -> tuple[str, str]:
    """The Image Factory's metal ISO for an installer image: (URL, file name on the storage)."""
    m = _INSTALLER.match(image)
    if m is None:
        raise ProviderError(f"cannot derive a Talos boot ISO from the installer image {image!r} "
                            "(expected <factory>/<platform>-installer/<schematic>:<version>); "
                            "use an Image Factory installer, or set spec.provider.templateVmid")
    iso = f"metal-amd64{m['sb'] or ''}.iso"
    return (f"https://{m['host']}/image/{m['id']}/{m['version']}/{iso}",
            f"talos-{m['id'][:12]}-{m['version']}-{iso}")


def _pick_address(answer: Any, mac: str, skip: set[str]) -> str:
    """The first usable address of the VM's NIC (IPv4 first), from network-get-interfaces."""
    interfaces = answer.get("result") if isinstance(answer, dict) else None
    interfaces = [i for i in interfaces or [] if isinstance(i, dict)]
    own = [i for i in interfaces if str(i.get("hardware-address", "")).lower() == mac.lower()]
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for iface in own if mac and own else interfaces:  # its own NIC, not cni0 or kube-ipvs0
        for entry in iface.get("ip-addresses") or []:
            try:
                ip = ipaddress.ip_address(str(entry.get("ip-address", "")).split("%")[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified
                    or ip.is_multicast or str(ip) in skip):
                found.append(ip)
    found.sort(key=lambda ip: ip.version)  # stable: keeps the agent's order within a family
    return str(found[0]) if found else ""


class ProxmoxProvider(Provider):
    """Nodes as QEMU VMs on Proxmox VE.

    `client` and `clock` are for tests; `token_secret` is the resolved secret when
    it comes from a Prefect Secret block (else the settings' environment variable).
    `user_data(node)` may name a cloud-init snippet volume (`local:snippets/x.yaml`)
    holding the node's Talos config, for templates made from the nocloud image;
    without it the node boots into maintenance mode and drover pushes its config.
    """

    kind = "proxmox"

    def __init__(self, spec: ClusterSpec, client: httpx.Client | None = None,
                 clock: Clock | None = None, token_secret: str | None = None, *,
                 task_timeout: float = 600.0, address_timeout: float | None = None,
                 poll_interval: float = 2.0, full_clone: bool = True,
                 user_data: Callable[[NodeSpec], str | None] | None = None) -> None:
        settings = spec.spec.provider
        if not isinstance(settings, ProxmoxSettings):
            raise ValueError(f"spec.provider.kind: {settings.kind!r} is not 'proxmox'")
        if urlparse(settings.url).scheme != "https":
            raise ProviderError(f"spec.provider.url: {settings.url!r} must be https:// "
                                "(the token travels in every request; TLS is always verified)")
        secret = token_secret or os.environ.get(settings.token_secret_env, "")
        if not secret:
            block = (f", or let the tasks resolve the Secret block {settings.token_secret_block!r}"
                     if settings.token_secret_block else "")
            raise ProviderError(f"Proxmox API token {settings.token_id}: no secret; the "
                                f"environment variable {settings.token_secret_env} is not "
                                f"set{block}")
        self.spec, self.settings = spec, settings
        self.clock = clock or SystemClock()
        self.http = client or _client(settings.ca_file)
        self.task_timeout, self.poll_interval = task_timeout, poll_interval
        self.address_timeout = (spec.spec.deployment.timeouts.provision_seconds
                                if address_timeout is None else address_timeout)
        self.full_clone, self.user_data = full_clone, user_data
        self._auth = _TokenAuth(settings.token_id, secret)
        self._api = settings.url.rstrip("/") + "/api2/json"
        self._shared = _endpoint(settings)
        self._tags = frozenset({"drover", f"cluster-{spec.name}"})
        self._skip = {urlparse(spec.spec.kubernetes.endpoint).hostname or ""}  # a shared VIP
        self._audited = False
        self._addresses: dict[int, str] = {}
        self._macs: dict[int, str] = {}
        self._isos: dict[tuple[str, str], str] = {}
        self._iso_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProxmoxProvider({self.spec.name!r}, {self.settings.url!r}, {self._auth!r})"

    # ---- the Provider interface ---------------------------------------------------------

    def prepare_image(self, image: str) -> str:
        """Fetch the boot ISO onto every node (once), or check the template; the handle is
        the installer image itself, which Talos installs and upgrades from."""
        if self.settings.template_vmid is not None:
            self._template()
        else:
            for pve in self.settings.nodes:
                self._ensure_iso(pve, image)
        return image

    def create_node(self, node: NodeSpec, image: str) -> Node:
        vm, foreign = self._lookup(node.name)
        if vm is None and foreign:
            raise ProviderError(f"{node.name}: the name is taken by VM {foreign[0].vmid} on "
                                f"{foreign[0].node}, which is not a node of drover cluster "
                                f"{self.spec.name}; rename or remove that VM")
        if vm is None:
            vm = self._build(node, image)
        elif not self._tags <= vm.tags:  # an earlier run cloned it and stopped there
            log.info("%s: adopting half-built VM %s on %s", node.name, vm.vmid, vm.node)
            self._configure(vm, node)
        if vm.status != "running":
            log.info("%s: starting VM %s on %s", node.name, vm.vmid, vm.node)
            self._task("POST", f"{vm.path}/status/start", f"{node.name}: start VM {vm.vmid}")
            vm = dataclasses.replace(vm, status="running")
        return self._node(vm, self._wait_address(vm))

    def get_node(self, name: str) -> Node:
        vm, _ = self._lookup(name)
        if vm is None:
            raise NodeNotFound(f"{name}: no VM of cluster {self.spec.name} on Proxmox")
        return self._node(vm, self._address(vm))

    def list_nodes(self) -> list[Node]:
        mine = [vm for vm in self._vms() if self._tags <= vm.tags and not vm.template]
        return sorted((self._node(vm, self._address(vm)) for vm in mine), key=lambda n: n.name)

    def delete_node(self, name: str) -> None:
        vm, _ = self._lookup(name)
        if vm is None:
            log.info("%s: no VM on Proxmox, nothing to delete", name)
            return
        try:
            if vm.status != "stopped":
                self._task("POST", f"{vm.path}/status/stop", f"{name}: stop VM {vm.vmid}")
            self._task("DELETE", vm.path, f"{name}: destroy VM {vm.vmid}", purge=1,
                       **{"destroy-unreferenced-disks": 1})
        except _Missing:
            pass  # gone in the meantime, which is what we wanted
        self._addresses.pop(vm.vmid, None)
        log.info("%s: VM %s destroyed (disks purged)", name, vm.vmid)

    def timing_scale(self) -> tuple[float, str]:
        clock = "wall-clock time" if self.clock.real else "virtual time (no real waiting)"
        return 1.0, f"proxmox, {clock}"

    # ---- the API: one call, one task -----------------------------------------------------

    def _request(self, method: str, path: str, **params: Any) -> Any:
        what = f"{method} {path}"
        form = {k: int(v) if isinstance(v, bool) else v for k, v in params.items()
                if v is not None}
        body = {"params": form} if method in ("GET", "DELETE") else {"data": form}
        try:
            resp = self.http.request(method, self._api + path, auth=self._auth, **body)
        except httpx.TransportError as exc:
            # `from None`: the cause carries the request, and with it the token header
            raise TransientError(self._auth.scrub(
                f"Proxmox {what}: {type(exc).__name__}: {exc}")) from None
        if resp.is_success:
            try:
                answer = resp.json()
            except ValueError:
                raise TransientError(f"Proxmox {what}: HTTP {resp.status_code}: not JSON") from None
            return answer.get("data") if isinstance(answer, dict) else None
        message = self._auth.scrub(_message(resp))
        text = f"Proxmox {what}: HTTP {resp.status_code}: {message}"
        if _MISSING.search(message):
            raise _Missing(text)
        if resp.status_code >= 500 or _LOCKED.search(message):
            raise TransientError(text)
        if resp.status_code == 401:
            text += f" (check API token {self.settings.token_id} and its secret)"
        raise ProviderError(text)

    def _call(self, method: str, path: str, **params: Any) -> Any:
        return retry.call(retry.api_call(self.clock), self._request, method, path, **params)

    def _submit(self, method: str, path: str, what: str, **params: Any) -> None:
        """One attempt: the call, then its task (if it started one) until it stops."""
        answer = self._request(method, path, **params)
        if isinstance(answer, str) and answer.startswith("UPID:"):
            self._wait_task(answer, what)

    def _task(self, method: str, path: str, what: str, **params: Any) -> None:
        retry.call(retry.api_call(self.clock), self._submit, method, path, what, **params)

    def _wait_task(self, upid: str, what: str) -> None:
        path = f"/nodes/{upid.split(':')[1]}/tasks/{upid}/status"

        def stopped() -> dict[str, Any] | None:
            status = self._call("GET", path) or {}
            return status if status.get("status") == "stopped" else None

        done = retry.poll_until(stopped, clock=self.clock, timeout=self.task_timeout,
                                interval=self.poll_interval, on_timeout=lambda: ProviderError(
                                    f"{what}: task {upid} still running after "
                                    f"{self.task_timeout:.0f}s"))
        exit_status = str(done.get("exitstatus") or "")
        if exit_status == "OK":
            return
        if exit_status.startswith("WARNINGS"):  # finished, and logged something on the way
            log.warning("%s: task %s ended with %s", what, upid, exit_status)
            return
        text = self._auth.scrub(f"{what}: task {upid} failed: {exit_status or 'no exit status'}")
        raise (TransientError if _LOCKED.search(exit_status) else ProviderError)(text)

    # ---- finding VMs ---------------------------------------------------------------------

    def _vms(self) -> list[_VM]:
        if not self._audited:
            self._check_audit()
        rows = self._call("GET", "/cluster/resources", type="vm") or []
        return [_VM.parse(r) for r in rows if r.get("type", "qemu") == "qemu" and "vmid" in r]

    def _check_audit(self) -> None:
        """A token without VM.Audit sees an empty VM list: say so rather than report no nodes."""
        perms = self._call("GET", "/access/permissions") or {}
        paths = ["/vms", "/"] + ([f"/pool/{self.settings.pool}"] if self.settings.pool else [])
        if not any("VM.Audit" in (perms.get(p) or {}) for p in paths):
            raise ProviderError(
                f"Proxmox API token {self.settings.token_id} lacks VM.Audit on "
                f"{' or '.join(paths)}: Proxmox would answer an empty VM list, which cannot be "
                "told from a cluster with no nodes; grant it a role with VM.Audit there")
        self._audited = True

    def _marker(self, name: str) -> str:
        return f"drover: cluster {self.spec.name}, node {name}"

    def _lookup(self, name: str) -> tuple[_VM | None, list[_VM]]:
        """This cluster's VM of that name (tagged, or cloned and marked but not yet tagged),
        and any other VMs carrying the name."""
        named = [vm for vm in self._vms() if vm.name == name and not vm.template]
        mine = [vm for vm in named if self._tags <= vm.tags]
        if len(mine) > 1:
            raise ProviderError(f"{name}: {len(mine)} VMs of cluster {self.spec.name} carry this "
                                f"name ({', '.join(str(vm.vmid) for vm in mine)}); remove extras")
        if mine:
            return mine[0], []
        for vm in named:
            if "drover" not in vm.tags and self._marker(name) in str(
                    (self._call("GET", f"{vm.path}/config") or {}).get("description", "")):
                return vm, []
        return None, named

    def _template(self) -> _VM:
        tid = self.settings.template_vmid
        found = next((vm for vm in self._vms() if vm.vmid == tid), None)
        if found is None:
            raise ProviderError(f"spec.provider.templateVmid: no VM {tid} on Proxmox "
                                "(or the API token cannot see it)")
        if not found.template:
            raise ProviderError(f"spec.provider.templateVmid: VM {tid} ({found.name}) is not a "
                                f"template; convert it first (qm template {tid})")
        return found

    def _node(self, vm: _VM, address: str) -> Node:
        try:
            pool = split_node_name(self.spec.name, vm.name)[0]
        except ValueError:
            pool = ""
        role = "controlplane" if pool == "cp" else "worker"
        return Node(vm.name, self.spec.name, role, pool, vm.status, address)

    # ---- building a VM -------------------------------------------------------------------

    def _place(self, name: str) -> str:
        """Round-robin by node number, so <cluster>-cp-1..3 land on different hosts."""
        nodes = self.settings.nodes
        try:
            return nodes[(split_node_name(self.spec.name, name)[1] - 1) % len(nodes)]
        except ValueError:
            return nodes[0]

    def _build(self, node: NodeSpec, image: str) -> _VM:
        target = self._place(node.name)
        template = self._template() if self.settings.template_vmid is not None else None
        iso = None if template else self._ensure_iso(target, image)
        with self._shared.clones:  # bounds the heavy copies, not the configure and start
            vm = retry.call(retry.api_call(self.clock), self._build_once, node, target,
                            template, iso)
        if template is not None and not self._tags <= vm.tags:  # not done by a parallel run
            self._configure(vm, node)
        return dataclasses.replace(vm, tags=self._tags)

    def _build_once(self, node: NodeSpec, target: str, template: _VM | None,
                    iso: str | None) -> _VM:
        found, _ = self._lookup(node.name)  # a lost answer to an earlier attempt made it
        if found is not None:
            return found
        with self._new_vmid() as vmid:
            if template is not None:
                log.info("%s: cloning template %s to VM %s on %s", node.name, template.vmid,
                         vmid, target)
                self._submit(
                    "POST", f"{template.path}/clone", f"{node.name}: clone to VM {vmid}",
                    newid=vmid, name=node.name, description=self._marker(node.name),
                    pool=self.settings.pool, full=self.full_clone,
                    storage=self.settings.storage if self.full_clone else None,
                    target=target if target != template.node else None)
            else:
                log.info("%s: creating VM %s on %s from %s", node.name, vmid, target, iso)
                self._submit(
                    "POST", f"/nodes/{target}/qemu", f"{node.name}: create VM {vmid}",
                    vmid=vmid, name=node.name, description=self._marker(node.name),
                    pool=self.settings.pool, ostype="l26",
                    scsi0=f"{self.settings.storage}:{node.size.disk_gib}",
                    ide2=f"{iso},media=cdrom", boot="order=scsi0;ide2", **self._hardware(node))
        return _VM(vmid, target, node.name, "stopped", frozenset())

    @contextmanager
    def _new_vmid(self) -> Iterator[int]:
        shared = self._shared
        with shared.lock:
            vmid = int(self._request("GET", "/cluster/nextid"))  # free, unless handed out here
            if vmid in shared.reserved:  # to a create whose VM does not show yet
                vmid = self._free_vmid_from(vmid + 1)
            shared.reserved.add(vmid)
        try:
            yield vmid
        finally:
            with shared.lock:
                shared.reserved.discard(vmid)

    def _free_vmid_from(self, start: int) -> int:
        """The first VMID from `start` that no VM has and no create here holds."""
        for vmid in itertools.count(start):
            if vmid in self._shared.reserved:
                continue
            try:  # nextid?vmid=N answers N when it is free, and refuses when a VM has it
                return int(self._request("GET", "/cluster/nextid", vmid=vmid))
            except ProviderError as exc:
                if not _TAKEN.search(str(exc)):
                    raise
        raise AssertionError("unreachable")

    def _hardware(self, node: NodeSpec, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sizes from the spec; no VirtIO SCSI single (Talos bootstrap hangs), no ballooning."""
        size, config = node.size, config or {}
        mac = _MAC.search(str(config.get("net0", "")))  # keep it: DHCP reservations use it
        params: dict[str, Any] = {
            "tags": ";".join(sorted(self._tags)), "cores": size.cpus, "sockets": 1,
            "memory": size.memory_mib, "balloon": 0, "cpu": "x86-64-v2-AES",
            "scsihw": "virtio-scsi-pci", "agent": "enabled=1",
            "net0": f"virtio{'=' + mac[1] if mac else ''},bridge={self.settings.bridge}"}
        snippet = self.user_data(node) if self.user_data else None
        if snippet:  # Talos nocloud reads user-data from the cloud-init drive
            params.update(cicustom=f"user={snippet}", ipconfig0="ip=dhcp")
            if not any("cloudinit" in str(v) for v in config.values()):
                params["ide0"] = f"{self.settings.storage}:cloudinit"
        return params

    def _configure(self, vm: _VM, node: NodeSpec) -> None:
        config = self._call("GET", f"{vm.path}/config") or {}
        log.info("%s: configuring VM %s: %d vCPU, %d MiB, %d GiB", node.name, vm.vmid,
                 node.size.cpus, node.size.memory_mib, node.size.disk_gib)
        self._task("POST", f"{vm.path}/config", f"{node.name}: configure VM {vm.vmid}",
                   **self._hardware(node, config))
        disk = next((d for d in ("scsi0", "virtio0", "sata0") if d in config), None)
        size = _SIZE.search(str(config.get(disk, ""))) if disk else None
        if disk and size and float(size[1]) * _GIB[size[2]] < node.size.disk_gib:
            self._task("PUT", f"{vm.path}/resize", f"{node.name}: grow {disk} of VM {vm.vmid}",
                       disk=disk, size=f"{node.size.disk_gib}G")

    def _ensure_iso(self, pve: str, image: str) -> str:
        with self._iso_lock:
            if (pve, image) in self._isos:
                return self._isos[pve, image]
            url, filename = _boot_iso(image)
            rows = self._call("GET", f"/nodes/{pve}/storage", content="iso", enabled=1) or []
            names = [str(r["storage"]) for r in rows if r.get("storage")]
            storage = next((s for s in (self.settings.storage, "local") if s in names),
                           names[0] if names else None)
            if storage is None:
                raise ProviderError(f"{pve}: no enabled storage takes ISO images; add one, "
                                    "or set spec.provider.templateVmid")
            volid = f"{storage}:iso/{filename}"
            have = self._call("GET", f"/nodes/{pve}/storage/{storage}/content", content="iso")
            if volid not in {row.get("volid") for row in have or []}:
                log.info("%s: downloading %s to %s", pve, url, volid)
                self._task("POST", f"/nodes/{pve}/storage/{storage}/download-url",
                           f"{pve}: download {filename}", content="iso", filename=filename,
                           url=url, **{"verify-certificates": 1})
            self._isos[pve, image] = volid
            return volid

    # ---- addresses -----------------------------------------------------------------------

    def _address(self, vm: _VM) -> str:
        """The VM's address from its guest agent now, or "" (not running, agent silent)."""
        if vm.status != "running":
            return ""
        if vm.vmid in self._addresses:
            return self._addresses[vm.vmid]
        try:
            answer = self._request("GET", f"{vm.path}/agent/network-get-interfaces")
            if vm.vmid not in self._macs:
                net0 = str((self._call("GET", f"{vm.path}/config") or {}).get("net0", ""))
                mac = _MAC.search(net0)
                self._macs[vm.vmid] = mac[1] if mac else ""
        except DroverError as exc:  # "QEMU guest agent is not running" is a 500
            log.debug("%s: no address yet: %s", vm.name, exc)
            return ""
        address = _pick_address(answer, self._macs[vm.vmid], self._skip)
        if address:
            self._addresses[vm.vmid] = address
        return address

    def _wait_address(self, vm: _VM) -> str:
        timeout = self.address_timeout
        address: str = retry.poll_until(
            lambda: self._address(vm) or None, clock=self.clock, timeout=timeout,
            interval=self.poll_interval, on_timeout=lambda: StageTimeout(
                "address", vm.name, f"VM {vm.vmid} on {vm.node} reported no usable address "
                f"through the QEMU guest agent within {timeout:.0f}s (is the "
                "siderolabs/qemu-guest-agent extension in the schematic? DHCP on "
                f"{self.settings.bridge}?)"))
        log.info("%s: VM %s on %s has address %s", vm.name, vm.vmid, vm.node, address)
        return address


register("proxmox")(ProxmoxProvider)
