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
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import httpx

from drover import retry
from drover.errors import DroverError, NodeNotFound, ProviderError, StageTimeout
from drover.lab.clock import Clock, SystemClock
from drover.provider_settings import ProxmoxProvider as ProxmoxSettings
from drover.providers.base import Node, Provider, register
from drover.providers.proxmox_api import (
    GIB,
    MAC,
    SIZE,
    TAKEN,
    VM,
    Missing,
    ProxmoxAPI,
    boot_iso,
    pick_address,
    shared_endpoint,
    token_secret_of,
)
from drover.spec import ClusterSpec, NodeSpec, split_node_name

log = logging.getLogger(__name__)


class ProxmoxProvider(Provider):
    """Nodes as QEMU VMs on Proxmox VE.

    `client` and `clock` are for tests; `token_secret` is a secret given by the caller;
    else it comes from the Prefect Secret block the settings name, else from their
    environment variable.
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
        self.spec, self.settings = spec, settings
        secret = token_secret or token_secret_of(settings)
        self.clock = clock or SystemClock()
        self.api = ProxmoxAPI(settings, secret, self.clock, client, task_timeout, poll_interval)
        self.poll_interval = poll_interval
        self.address_timeout = (spec.spec.deployment.timeouts.provision_seconds
                                if address_timeout is None else address_timeout)
        self.full_clone, self.user_data = full_clone, user_data
        self._shared = shared_endpoint(settings)
        self._tags = frozenset({"drover", f"cluster-{spec.name}"})
        self._skip = {urlparse(spec.spec.kubernetes.endpoint).hostname or ""}  # a shared VIP
        self._audited = False
        self._addresses: dict[int, str] = {}
        self._macs: dict[int, str] = {}
        self._isos: dict[tuple[str, str], str] = {}
        self._iso_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProxmoxProvider({self.spec.name!r}, {self.settings.url!r}, {self.api.auth!r})"

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
            self.api.task("POST", f"{vm.path}/status/start", f"{node.name}: start VM {vm.vmid}")
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
                self.api.task("POST", f"{vm.path}/status/stop", f"{name}: stop VM {vm.vmid}")
            self.api.task("DELETE", vm.path, f"{name}: destroy VM {vm.vmid}", purge=1,
                       **{"destroy-unreferenced-disks": 1})
        except Missing:
            pass  # gone in the meantime, which is what we wanted
        self._addresses.pop(vm.vmid, None)
        log.info("%s: VM %s destroyed (disks purged)", name, vm.vmid)

    def timing_scale(self) -> tuple[float, str]:
        clock = "wall-clock time" if self.clock.real else "virtual time (no real waiting)"
        return 1.0, f"proxmox, {clock}"

    # ---- finding VMs ---------------------------------------------------------------------

    def _vms(self) -> list[VM]:
        if not self._audited:
            self._check_audit()
        rows = self.api.call("GET", "/cluster/resources", type="vm") or []
        return [VM.parse(r) for r in rows if r.get("type", "qemu") == "qemu" and "vmid" in r]

    def _check_audit(self) -> None:
        """A token without VM.Audit sees an empty VM list: say so rather than report no nodes."""
        perms = self.api.call("GET", "/access/permissions") or {}
        paths = ["/vms", "/"] + ([f"/pool/{self.settings.pool}"] if self.settings.pool else [])
        if not any("VM.Audit" in (perms.get(p) or {}) for p in paths):
            raise ProviderError(
                f"Proxmox API token {self.settings.token_id} lacks VM.Audit on "
                f"{' or '.join(paths)}: Proxmox would answer an empty VM list, which cannot be "
                "told from a cluster with no nodes; grant it a role with VM.Audit there")
        self._audited = True

    def _marker(self, name: str) -> str:
        return f"drover: cluster {self.spec.name}, node {name}"

    def _lookup(self, name: str) -> tuple[VM | None, list[VM]]:
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
                    (self.api.call("GET", f"{vm.path}/config") or {}).get("description", "")):
                return vm, []
        return None, named

    def _template(self) -> VM:
        tid = self.settings.template_vmid
        found = next((vm for vm in self._vms() if vm.vmid == tid), None)
        if found is None:
            raise ProviderError(f"spec.provider.templateVmid: no VM {tid} on Proxmox "
                                "(or the API token cannot see it)")
        if not found.template:
            raise ProviderError(f"spec.provider.templateVmid: VM {tid} ({found.name}) is not a "
                                f"template; convert it first (qm template {tid})")
        return found

    def _node(self, vm: VM, address: str) -> Node:
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

    def _build(self, node: NodeSpec, image: str) -> VM:
        target = self._place(node.name)
        template = self._template() if self.settings.template_vmid is not None else None
        iso = None if template else self._ensure_iso(target, image)
        with self._shared.clones:  # bounds the heavy copies, not the configure and start
            vm = retry.call(retry.api_call(self.clock), self._build_once, node, target,
                            template, iso)
        if template is not None and not self._tags <= vm.tags:  # not done by a parallel run
            self._configure(vm, node)
        return dataclasses.replace(vm, tags=self._tags)

    def _build_once(self, node: NodeSpec, target: str, template: VM | None,
                    iso: str | None) -> VM:
        found, _ = self._lookup(node.name)  # a lost answer to an earlier attempt made it
        if found is not None:
            return found
        with self._new_vmid() as vmid:
            if template is not None:
                log.info("%s: cloning template %s to VM %s on %s", node.name, template.vmid,
                         vmid, target)
                self.api.submit(
                    "POST", f"{template.path}/clone", f"{node.name}: clone to VM {vmid}",
                    newid=vmid, name=node.name, description=self._marker(node.name),
                    pool=self.settings.pool, full=self.full_clone,
                    storage=self.settings.storage if self.full_clone else None,
                    target=target if target != template.node else None)
            else:
                log.info("%s: creating VM %s on %s from %s", node.name, vmid, target, iso)
                self.api.submit(
                    "POST", f"/nodes/{target}/qemu", f"{node.name}: create VM {vmid}",
                    vmid=vmid, name=node.name, description=self._marker(node.name),
                    pool=self.settings.pool, ostype="l26",
                    scsi0=f"{self.settings.storage}:{node.size.disk_gib}",
                    ide2=f"{iso},media=cdrom", boot="order=scsi0;ide2", **self._hardware(node))
        return VM(vmid, target, node.name, "stopped", frozenset())

    @contextmanager
    def _new_vmid(self) -> Iterator[int]:
        shared = self._shared
        with shared.lock:
            vmid = int(self.api.request("GET", "/cluster/nextid"))  # free, unless handed out here
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
                return int(self.api.request("GET", "/cluster/nextid", vmid=vmid))
            except ProviderError as exc:
                if not TAKEN.search(str(exc)):
                    raise
        raise AssertionError("unreachable")

    def _hardware(self, node: NodeSpec, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sizes from the spec; no VirtIO SCSI single (Talos bootstrap hangs), no ballooning."""
        size, config = node.size, config or {}
        mac = MAC.search(str(config.get("net0", "")))  # keep it: DHCP reservations use it
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

    def _configure(self, vm: VM, node: NodeSpec) -> None:
        config = self.api.call("GET", f"{vm.path}/config") or {}
        log.info("%s: configuring VM %s: %d vCPU, %d MiB, %d GiB", node.name, vm.vmid,
                 node.size.cpus, node.size.memory_mib, node.size.disk_gib)
        self.api.task("POST", f"{vm.path}/config", f"{node.name}: configure VM {vm.vmid}",
                   **self._hardware(node, config))
        disk = next((d for d in ("scsi0", "virtio0", "sata0") if d in config), None)
        size = SIZE.search(str(config.get(disk, ""))) if disk else None
        if disk and size and float(size[1]) * GIB[size[2]] < node.size.disk_gib:
            self.api.task("PUT", f"{vm.path}/resize", f"{node.name}: grow {disk} of VM {vm.vmid}",
                       disk=disk, size=f"{node.size.disk_gib}G")

    def _ensure_iso(self, pve: str, image: str) -> str:
        with self._iso_lock:
            if (pve, image) in self._isos:
                return self._isos[pve, image]
            url, filename = boot_iso(image)
            rows = self.api.call("GET", f"/nodes/{pve}/storage", content="iso", enabled=1) or []
            names = [str(r["storage"]) for r in rows if r.get("storage")]
            storage = next((s for s in (self.settings.storage, "local") if s in names),
                           names[0] if names else None)
            if storage is None:
                raise ProviderError(f"{pve}: no enabled storage takes ISO images; add one, "
                                    "or set spec.provider.templateVmid")
            volid = f"{storage}:iso/{filename}"
            have = self.api.call("GET", f"/nodes/{pve}/storage/{storage}/content", content="iso")
            if volid not in {row.get("volid") for row in have or []}:
                log.info("%s: downloading %s to %s", pve, url, volid)
                self.api.task("POST", f"/nodes/{pve}/storage/{storage}/download-url",
                           f"{pve}: download {filename}", content="iso", filename=filename,
                           url=url, **{"verify-certificates": 1})
            self._isos[pve, image] = volid
            return volid

    # ---- addresses -----------------------------------------------------------------------

    def _address(self, vm: VM) -> str:
        """The VM's address from its guest agent now, or "" (not running, agent silent)."""
        if vm.status != "running":
            return ""
        if vm.vmid in self._addresses:
            return self._addresses[vm.vmid]
        try:
            answer = self.api.request("GET", f"{vm.path}/agent/network-get-interfaces")
            if vm.vmid not in self._macs:
                net0 = str((self.api.call("GET", f"{vm.path}/config") or {}).get("net0", ""))
                mac = MAC.search(net0)
                self._macs[vm.vmid] = mac[1] if mac else ""
        except DroverError as exc:  # "QEMU guest agent is not running" is a 500
            log.debug("%s: no address yet: %s", vm.name, exc)
            return ""
        address = pick_address(answer, self._macs[vm.vmid], self._skip)
        if address:
            self._addresses[vm.vmid] = address
        return address

    def _wait_address(self, vm: VM) -> str:
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
