"""The libvirt provider: nodes are QEMU/KVM domains on hosts reached over SSH.

Everything runs on the hosts through drover.ssh (host keys verified, one pooled connection
per host shared by every node): `virsh` for domains, `qemu-img` for disks
(drover/providers/libvirt_host.py). A boot image (spec.provider.bootImage, or the Talos
nocloud qcow2 from the Image Factory) is checked by sha256 (drover.bootimage: pinned by
bootImageSha256, else trusted on first download) and uploaded once per host and hash, the
files and hosts in parallel; each node's disk is a qcow2 overlay on it (no full copy). Its
machine config rides on a cidata disk (Talos nocloud `user-data` + `meta-data`) built
here and written 0600 from its first byte, or, with configDelivery: api, goes over the
Talos API in maintenance mode. Each domain records drover's cluster and node in its
metadata, so list_nodes finds exactly this cluster's domains; a leftover domain of an
earlier run is adopted, a foreign one of the same name refused. The address comes from the
node's serial console (waited for on the host, no polling from here), or on a libvirt
network from the DHCP lease, ARP, then the console; none within the timeout is an error.
Every call is timed per node and step (drover/steps.py).
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drover import retry, steps
from drover.bootimage import fetch_boot_image, verified_file
from drover.errors import NodeNotFound, ProviderError, StageTimeout
from drover.home import cluster_dir
from drover.imagefactory import ImageFactory
from drover.lab.clock import Clock, SystemClock
from drover.machineconfig import load_secrets, render_node_yaml
from drover.provider_settings import LibvirtProvider as LibvirtSettings
from drover.provider_settings import SshTarget
from drover.providers.base import Node, Provider, register
from drover.providers.libvirt_host import NAMESPACE, Domain, Host, domain_xml
from drover.spec import ClusterSpec, NodeSpec, split_node_name
from drover.ssh import CommandTimeout

log = logging.getLogger(__name__)

ADDRESS = r"inet [0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+"   # `ip addr` on the console
_LEASE = re.compile(r"ipv4\s+(\d+\.\d+\.\d+\.\d+)/\d+")       # `virsh domifaddr`
# a warm define takes well under a second; tens of seconds mean libvirt probes QEMU again on
# every lookup, as when /dev/kvm's permissions disagree with what the probe found
SLOW_DEFINE = 5.0
DEFINE_TIMEOUT = 600.0

class Libvirt(Provider):
    kind = "libvirt"

    def __init__(self, spec: ClusterSpec, clock: Clock | None = None) -> None:
        settings = spec.spec.provider
        if not isinstance(settings, LibvirtSettings):
            raise ValueError(f"spec.provider.kind: {settings.kind!r} is not 'libvirt'")
        self.spec, self.settings = spec, settings
        self.clock = clock or SystemClock()
        self.storage = settings.storage_dir.rstrip("/")
        self._verified: dict[str, tuple[Path, str]] = {}
        self._verify_lock = threading.Lock()
        self._look = 0.0  # seconds until a wait looks again (see next_change_at)

    # ---- hosts -------------------------------------------------------------------------
    def _host(self, target: SshTarget) -> Host:
        return Host(target, self.settings.uri, self.spec.name, self.clock)

    def _target_for(self, name: str) -> SshTarget:
        """Spread nodes over the hosts by their number, the same answer in every process."""
        hosts = self.settings.hosts
        return hosts[(split_node_name(self.spec.name, name)[1] - 1) % len(hosts)]

    def _folder(self) -> str:
        return f"{self.storage}/{self.spec.name}"

    def _console(self, name: str) -> str:
        return f"{self._folder()}/{name}.console.log"

    # ---- images ----------------------------------------------------------------------
    def _boot_disk(self) -> tuple[Path, str]:
        """The local boot disk and its sha256: spec.provider.bootImage, or the Talos nocloud
        qcow2 of the spec's schematic and version from the Image Factory (downloaded once,
        cached); checked against bootImageSha256, else trusted on first download."""
        pin = self.settings.boot_image_sha256
        if self.settings.boot_image:
            return verified_file(Path(self.settings.boot_image).expanduser(), pin,
                                  "spec.provider.bootImageSha256")
        with ImageFactory.for_spec(self.spec) as factory:
            schematic = factory.create_schematic(self.spec)
            return fetch_boot_image(factory, factory.disk_image_url(
                schematic, self.spec.spec.talos.version, platform="nocloud", suffix="qcow2"), pin)

    def _local_files(self) -> dict[str, tuple[Path, str]]:
        """The boot files to upload with their verified sha256, worked out once per provider
        (a local file's hash once per process, while its size and mtime stay)."""
        with self._verify_lock:
            if not self._verified:
                self._verified = {"base": self._boot_disk(), **{
                    key: verified_file(Path(getattr(self.settings, key)).expanduser(),
                                        getattr(self.settings, f"{key}_sha256"),
                                        f"spec.provider.{key}Sha256")
                    for key in ("kernel", "initrd") if getattr(self.settings, key)}}
            return self._verified

    def _boot_files(self, target: SshTarget) -> dict[str, str]:
        host, files = self._host(target), self._local_files()
        with ThreadPoolExecutor(len(files)) as pool:  # one SFTP channel per file
            remote = {key: pool.submit(host.upload_once, path, digest, f"{self.storage}/base")
                      for key, (path, digest) in files.items()}
            return {key: future.result() for key, future in remote.items()}

    def prepare_image(self, image: str) -> str:
        self._local_files()
        hosts = self.settings.hosts
        with ThreadPoolExecutor(len(hosts)) as pool:
            for done in [pool.submit(self._boot_files, target) for target in hosts]:
                done.result()
        return image  # the installer image Talos installs and upgrades from

    # ---- nodes -----------------------------------------------------------------------
    def _domain(self, host: Host, name: str) -> Domain | None:
        return host.domains([name], NAMESPACE).get(name)

    def _as_node(self, host: Host, domain: Domain, address: str | None = None) -> Node:
        meta = domain.meta
        if address is None:
            address = self._addresses(host, [domain]).get(domain.name, "")
        return Node(domain.name, meta.get("cluster", ""), meta.get("role", ""),
                    meta.get("pool", ""), domain.state, address, domain.uuid)

    def create_node(self, node: NodeSpec, image: str) -> Node:
        host = self._host(self._target_for(node.name))
        boot = self._boot_files(host.target)
        domain_uuid = str(uuid.uuid4())
        if self._define(host, node, boot, domain_uuid):  # defined and started, or it exists
            found = Domain(node.name, "running", domain_uuid, self._meta(node))
        else:
            found = self._adopt(host, node)
        address = self._await_address(host, node.name)
        return self._as_node(host, Domain(node.name, "running", found.uuid, found.meta), address)

    def _adopt(self, host: Host, node: NodeSpec) -> Domain:
        """A domain of the node's name that already exists: this cluster's is started if it
        is not running, another's refused."""
        found = self._domain(host, node.name)
        owner = None if found is None else found.meta.get("cluster", "")
        if found is None or owner != self.spec.name:
            raise ProviderError(f"{node.name}: a domain of that name exists on "
                                f"{host.target.host} and is not a node of drover cluster "
                                f"{self.spec.name} (metadata: {owner or 'none'}); rename or "
                                "remove it")
        if found.state != "running":
            log.info("%s: starting domain on %s", node.name, host.target.host)
            with host.timed(node.name, "start"):
                host.virsh("start", node.name)
        return found

    def _meta(self, node: NodeSpec) -> dict[str, str]:
        return {"cluster": self.spec.name, "node": node.name, "role": node.role,
                "pool": node.pool}

    def _define(self, host: Host, node: NodeSpec, boot: dict[str, str],
                domain_uuid: str) -> bool:
        """Overlay, cidata, define and start in one round trip; False (nothing done) when a
        domain of that name exists."""
        folder = self._folder()
        paths = {"folder": folder, "console": self._console(node.name), "base": boot["base"],
                 "disk": f"{folder}/{node.name}.qcow2", "cidata": ""}
        cidata = b""
        if self.settings.config_delivery == "cidata":  # else over the Talos API
            paths["cidata"] = f"{folder}/{node.name}-cidata.iso"
            with host.timed(node.name, "cidata build"), tempfile.TemporaryDirectory() as tmp:
                cidata = self._cidata(Path(tmp), node).read_bytes()
        xml = self._domain_xml(node, paths["disk"], paths["cidata"], boot, domain_uuid)
        created = host.create_domain(node.name, paths, f"{node.size.disk_gib}G", cidata, xml,
                                     DEFINE_TIMEOUT)
        took = next((s.seconds for s in steps.peek(self.spec.name)
                     if s.node == node.name and s.step == "define"), 0.0)
        if took > SLOW_DEFINE:
            log.warning("%s: `virsh define` took %.1fs on %s (a warm define takes well under a "
                        "second): libvirt is probing QEMU's capabilities again on every "
                        "lookup. Its debug log says why; a common cause is /dev/kvm readable "
                        "by root only (udev makes it root:kvm 0660)", node.name, took,
                        host.target.host)
        if created:
            log.info("%s: domain defined and started on %s (overlay on %s)", node.name,
                     host.target.host, boot["base"].rsplit("/", 1)[-1])
        return created

    def _cidata(self, folder: Path, node: NodeSpec) -> Path:
        """A nocloud cidata disk: the node's machine config as user-data (file mode 0600)."""
        secrets = load_secrets(cluster_dir(self.spec.name))
        (folder / "user-data").write_text(render_node_yaml(self.spec, node, secrets))
        (folder / "user-data").chmod(0o600)
        (folder / "meta-data").write_text(f"local-hostname: {node.name}\n")
        iso = folder / "cidata.iso"
        subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-V", "cidata", "-r",
                        "-J", str(folder / "user-data"), str(folder / "meta-data")], check=True,
                       timeout=60)
        iso.chmod(0o600)
        return iso

    def _domain_xml(self, node: NodeSpec, disk: str, cidata: str, boot: dict[str, str],
                    domain_uuid: str | None = None) -> str:
        return domain_xml(self.spec.name, self.settings, node, disk, cidata, boot,
                          self._console(node.name), domain_uuid or str(uuid.uuid4()))

    def _await_address(self, host: Host, name: str) -> str:
        """Follow the node's console on the host to its first line, and on QEMU user
        networking to its address; on a libvirt network ask for the lease, ARP, console."""
        timeout = self.settings.address_timeout_seconds
        deadline = self.clock.now() + timeout

        def timed_out() -> StageTimeout:
            return StageTimeout("provision", name, f"no address within {timeout:.0f}s (no DHCP "
                                "lease, ARP entry or address on the console)")
        user = self.settings.network == "user"  # no lease or ARP entry to ask libvirt for
        try:
            found = host.follow_console(name, self._console(name), ADDRESS if user else None,
                                        timeout)
        except CommandTimeout:
            raise timed_out() from None
        if user:
            return found.split()[-1].split("/")[0]
        running = Domain(name, "running", "", {})
        with host.timed(name, "address"):
            return retry.poll_until(
                lambda: self._addresses(host, [running]).get(name) or None,
                clock=self.clock, timeout=max(1.0, deadline - self.clock.now()),
                interval=0.5, on_timeout=timed_out)

    def _addresses(self, host: Host, domains: list[Domain]) -> dict[str, str]:
        """Each running domain's address: DHCP lease, then ARP, then its serial console."""
        running = [d.name for d in domains if d.state == "running"]
        found: dict[str, str] = {}
        if self.settings.network != "user":
            answers = host.virsh_batch({f"{source}:{n}": ["domifaddr", n, "--source", source]
                                        for n in running for source in ("lease", "arp")})
            for name in running:
                for source in ("lease", "arp"):
                    match = _LEASE.search(answers[f"{source}:{name}"])
                    if match and name not in found:
                        found[name] = match.group(1)
        rest = {n: self._console(n) for n in running if n not in found}
        for name, lines in host.grep_consoles(rest, ADDRESS).items():
            if lines:
                found[name] = lines[-1].split()[-1].split("/")[0]
        return found

    def get_node(self, name: str) -> Node:
        host = self._host(self._target_for(name))
        found = self._domain(host, name)
        if found is None or found.meta.get("cluster") != self.spec.name:
            raise NodeNotFound(f"{name}: no domain of cluster {self.spec.name} on "
                               f"{host.target.host}")
        return self._as_node(host, found)

    def list_nodes(self) -> list[Node]:
        nodes = []
        for target in self.settings.hosts:
            host = self._host(target)
            names = host.virsh("list", "--all", "--name").split()
            ours = [d for d in host.domains(names, NAMESPACE).values()
                    if d.meta.get("cluster") == self.spec.name]
            addresses = self._addresses(host, ours)
            nodes += [self._as_node(host, d, addresses.get(d.name, "")) for d in ours]
        return sorted(nodes, key=lambda n: n.name)

    def delete_node(self, name: str) -> None:
        """Destroy and undefine the domain and remove its disks; fine when already gone."""
        host = self._host(self._target_for(name))
        found = self._domain(host, name)
        owner = None if found is None else found.meta.get("cluster", "")
        if owner not in (None, self.spec.name):
            raise ProviderError(f"{name}: the domain on {host.target.host} is not drover's "
                                f"(cluster {owner or 'none'}); not deleting it")
        if found is not None:
            with host.timed(name, "destroy"):
                answers = host.virsh_batch({"destroy": ["destroy", name],
                                            "undefine": ["undefine", name]})
            if self._domain(host, name) is not None:
                raise ProviderError(f"{name}: still defined on {host.target.host} after "
                                    f"`virsh undefine` ({answers['undefine'] or 'no output'})")
        folder = self._folder()
        host.run(["rm", "-f", f"{folder}/{name}.qcow2", f"{folder}/{name}.xml",
                  f"{folder}/{name}-cidata.iso", self._console(name)])
        log.info("%s: domain and volumes removed from %s", name, host.target.host)

    def delete_nodes(self, names: list[str]) -> None:
        """All at once (each is mostly libvirt's own `virsh destroy`, ~2 s); every delete is
        tried, then the first failure raised."""
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            futures = [pool.submit(self.delete_node, name) for name in names]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]

    def timing_scale(self) -> tuple[float, str]:
        return 1.0, f"libvirt ({self.settings.domain_type}), wall-clock time"

    def next_change_at(self, node: str | None = None) -> float | None:
        """A libvirt host announces nothing, so a wait looks again soon, then less often:
        0.1 s, doubling to 2 s (per provider, so per wait): a node that is ready a moment
        later costs no 5 s sleep, and one that takes long costs few looks."""
        self._look = min(2 * self._look, 2.0) if self._look else 0.1
        return self.clock.now() + self._look


register("libvirt")(Libvirt)
