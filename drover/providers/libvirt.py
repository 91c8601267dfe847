"""The libvirt provider: nodes are QEMU/KVM domains on hosts reached over SSH.

Everything runs on the hosts through drover.ssh (host keys verified): `virsh` for
domains, `qemu-img` for disks. A boot image (spec.provider.bootImage, or the Talos
nocloud qcow2 from the Image Factory) is checked by sha256 (drover.bootimage: pinned by
bootImageSha256, else trusted on first download) and uploaded once per host and hash; each
node's disk is a qcow2 overlay on it (no full copy). Its machine config rides on a
cidata disk (Talos nocloud `user-data` + `meta-data`) built here and uploaded 0600, or,
with configDelivery: api, goes over the Talos API in maintenance mode. Each domain
records drover's cluster and node in its metadata, so list_nodes finds exactly this
cluster's domains; a leftover domain of an earlier run is adopted, a foreign one of the
same name refused. Addresses come from the DHCP lease, then ARP, then the address the
node prints on its serial console; none within the timeout is an error, never a success.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
import threading
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from drover import retry
from drover.bootimage import BootImageMismatch, fetch_boot_image, verify_file
from drover.errors import NodeNotFound, ProviderError, StageTimeout
from drover.home import cluster_dir
from drover.imagefactory import ImageFactory
from drover.lab.clock import Clock, SystemClock
from drover.machineconfig import load_secrets, render_node_yaml
from drover.provider_settings import LibvirtProvider as LibvirtSettings
from drover.provider_settings import SshTarget
from drover.providers.base import Node, Provider, register
from drover.spec import ClusterSpec, NodeSpec, split_node_name
from drover.ssh import CommandFailed, Connection, connect

log = logging.getLogger(__name__)

NAMESPACE = "https://drover.dev/xmlns/node/1"
_ADDRESS = re.compile(r"\binet (\d+\.\d+\.\d+\.\d+)/\d+")   # `ip addr` on the console
_LEASE = re.compile(r"ipv4\s+(\d+\.\d+\.\d+\.\d+)/\d+")     # `virsh domifaddr`
COMMAND_TIMEOUT = 120.0
# libvirt may re-probe QEMU's capabilities when it defines a domain: tens of seconds each,
# one at a time, so parallel provisioning of a few nodes can queue for minutes
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

    # ---- hosts and commands ------------------------------------------------------------
    def _host(self, target: SshTarget) -> Connection:
        return retry.call(retry.api_call(self.clock), connect, target)

    def _virsh(self, target: SshTarget, *args: str, check: bool = True,
               timeout: float = COMMAND_TIMEOUT) -> str:
        result = self._host(target).run(["virsh", "-q", "-c", self.settings.uri, *args],
                                        timeout, check=check)
        return result.stdout if result.exit_status == 0 else ""

    def _target_for(self, name: str) -> SshTarget:
        """Spread nodes over the hosts by their number, the same answer in every process."""
        hosts = self.settings.hosts
        return hosts[(split_node_name(self.spec.name, name)[1] - 1) % len(hosts)]

    def _folder(self) -> str:
        return f"{self.storage}/{self.spec.name}"

    # ---- images ----------------------------------------------------------------------
    def _upload_once(self, target: SshTarget, local: Path, digest: str) -> str:
        """Upload `local` (sha256 `digest`, verified) to the host's base folder under its
        content hash; skip if there. The host's copy must hash to `digest` too."""
        remote = f"{self.storage}/base/{digest[:16]}-{local.name}"
        host = self._host(target)
        host.run(["mkdir", "-p", f"{self.storage}/base"], COMMAND_TIMEOUT)
        sent = host.upload(local, remote)
        if sent.sha256 != digest:  # the local file changed after it was verified
            raise BootImageMismatch(f"{local}: changed while drover was uploading it to "
                                    f"{target.host} (sha256 {sent.sha256}, verified {digest})")
        host.run(["chmod", "0644", remote], COMMAND_TIMEOUT)  # qemu reads it as its own user
        return remote

    def _boot_disk(self) -> tuple[Path, str]:
        """The local boot disk and its sha256: spec.provider.bootImage, or the Talos nocloud
        qcow2 of the spec's schematic and version from the Image Factory (downloaded once,
        cached); checked against bootImageSha256, else trusted on first download."""
        pin = self.settings.boot_image_sha256
        if self.settings.boot_image:
            path = Path(self.settings.boot_image).expanduser()
            return path, verify_file(path, pin, "spec.provider.bootImageSha256")
        with ImageFactory.for_spec(self.spec) as factory:
            schematic = factory.create_schematic(self.spec)
            return fetch_boot_image(factory, factory.disk_image_url(
                schematic, self.spec.spec.talos.version, platform="nocloud", suffix="qcow2"), pin)

    def _local_files(self) -> dict[str, tuple[Path, str]]:
        """The boot files to upload with their verified sha256, worked out once per provider."""
        with self._verify_lock:
            if not self._verified:
                self._verified = {"base": self._boot_disk(), **{
                    key: self._direct_boot_file(key) for key in ("kernel", "initrd")
                    if getattr(self.settings, key)}}
            return self._verified

    def _direct_boot_file(self, key: str) -> tuple[Path, str]:
        path, pin = Path(getattr(self.settings, key)).expanduser(), f"{key}_sha256"
        return path, verify_file(path, getattr(self.settings, pin), f"spec.provider.{key}Sha256")

    def _boot_files(self, target: SshTarget) -> dict[str, str]:
        return {key: self._upload_once(target, path, digest)
                for key, (path, digest) in self._local_files().items()}

    def prepare_image(self, image: str) -> str:
        for target in self.settings.hosts:
            self._boot_files(target)
        return image  # the installer image Talos installs and upgrades from

    # ---- nodes -----------------------------------------------------------------------
    def _owner(self, target: SshTarget, name: str) -> str | None:
        """The cluster recorded in domain `name`'s metadata; '' if it has none; None if absent."""
        host = self._host(target)
        state = host.run(["virsh", "-q", "-c", self.settings.uri, "domstate", name],
                         COMMAND_TIMEOUT, check=False)
        if state.exit_status != 0:
            return None
        meta = self._virsh(target, "metadata", name, NAMESPACE, check=False)
        found = re.search(r'cluster="([^"]*)"', meta)
        return found.group(1) if found else ""

    def _node(self, target: SshTarget, name: str) -> Node:
        meta = self._virsh(target, "metadata", name, NAMESPACE)
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', meta))
        state = self._virsh(target, "domstate", name).strip() or "unknown"
        uuid = self._virsh(target, "domuuid", name).strip()
        return Node(name, attrs.get("cluster", ""), attrs.get("role", ""), attrs.get("pool", ""),
                    state, self._address(target, name) if state == "running" else "", uuid)

    def create_node(self, node: NodeSpec, image: str) -> Node:
        target = self._target_for(node.name)
        owner = self._owner(target, node.name)
        if owner is not None and owner != self.spec.name:
            raise ProviderError(f"{node.name}: a domain of that name exists on {target.host} and "
                                f"is not a node of drover cluster {self.spec.name} (metadata: "
                                f"{owner or 'none'}); rename or remove it")
        if owner is None:
            self._define(target, node, self._boot_files(target))
        if self._virsh(target, "domstate", node.name).strip() != "running":
            log.info("%s: starting domain on %s", node.name, target.host)
            self._virsh(target, "start", node.name)
        timeout = self.settings.address_timeout_seconds
        retry.poll_until(lambda: self._address(target, node.name) or None, clock=self.clock,
                         timeout=timeout, interval=2.0, on_timeout=lambda: StageTimeout(
                             "provision", node.name, f"no address within {timeout:.0f}s (no "
                             "DHCP lease, ARP entry or address on the console)"))
        return self._node(target, node.name)

    def _define(self, target: SshTarget, node: NodeSpec, boot: dict[str, str]) -> None:
        host, folder = self._host(target), self._folder()
        disk, cidata = f"{folder}/{node.name}.qcow2", f"{folder}/{node.name}-cidata.iso"
        host.run(["mkdir", "-p", folder], COMMAND_TIMEOUT)
        host.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", boot["base"], "-F", "qcow2",
                  disk, f"{node.size.disk_gib}G"], COMMAND_TIMEOUT)
        if self.settings.config_delivery == "cidata":
            with tempfile.TemporaryDirectory() as tmp:
                host.upload(self._cidata(Path(tmp), node), cidata)
            host.run(["chmod", "0600", cidata], COMMAND_TIMEOUT)  # it holds the node's secrets
        else:
            cidata = ""  # the config goes over the Talos API in maintenance mode
        xml = f"{folder}/{node.name}.xml"
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "domain.xml"
            local.write_text(self._domain_xml(node, disk, cidata, boot))
            host.upload(local, xml)
        self._virsh(target, "define", xml, timeout=DEFINE_TIMEOUT)
        log.info("%s: domain defined on %s (overlay on %s)", node.name, target.host,
                 boot["base"].rsplit("/", 1)[-1])

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

    def _domain_xml(self, node: NodeSpec, disk: str, cidata: str, boot: dict[str, str]) -> str:
        name = escape(node.name)
        kernel = ""
        if "kernel" in boot:
            kernel = (f"<kernel>{escape(boot['kernel'])}</kernel>"
                      + (f"<initrd>{escape(boot['initrd'])}</initrd>" if "initrd" in boot else "")
                      + f"<cmdline>{escape(self.settings.cmdline)}</cmdline>")
        network = self.settings.network
        nic = ("<interface type='user'><model type='virtio'/></interface>" if network == "user"
               else f"<interface type='network'><source network={quoteattr(network)}/>"
                    "<model type='virtio'/></interface>")
        console = f"{self._folder()}/{node.name}.console.log"
        cidata_disk = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                       f"<source file={quoteattr(cidata)}/><target dev='vdb' bus='virtio'/>"
                       "<readonly/></disk>") if cidata else ""
        return f"""<domain type='{self.settings.domain_type}'>
  <name>{name}</name>
  <metadata><drover:node xmlns:drover='{NAMESPACE}' cluster={quoteattr(self.spec.name)}
    node={quoteattr(node.name)} role={quoteattr(node.role)} pool={quoteattr(node.pool)}/>
  </metadata>
  <memory unit='MiB'>{node.size.memory_mib}</memory>
  <vcpu>{node.size.cpus}</vcpu>
  <os><type arch='x86_64'>hvm</type>{kernel}<boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file={quoteattr(disk)}/><target dev='vda' bus='virtio'/></disk>
    {cidata_disk}
    {nic}
    <serial type='file'><source path={quoteattr(console)}/><target port='0'/></serial>
    <console type='file'><source path={quoteattr(console)}/>
      <target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""

    def _address(self, target: SshTarget, name: str) -> str:
        for source in ("lease", "arp"):
            found = _LEASE.search(self._virsh(target, "domifaddr", name, "--source", source,
                                              check=False))
            if found:
                return found.group(1)
        log_file = f"{self._folder()}/{name}.console.log"
        console = self._host(target).run(["cat", log_file], COMMAND_TIMEOUT, check=False)
        found = _ADDRESS.findall(console.stdout)
        return found[-1] if found else ""

    def get_node(self, name: str) -> Node:
        target = self._target_for(name)
        if self._owner(target, name) != self.spec.name:
            raise NodeNotFound(f"{name}: no domain of cluster {self.spec.name} on {target.host}")
        return self._node(target, name)

    def list_nodes(self) -> list[Node]:
        nodes = []
        for target in self.settings.hosts:
            for name in self._virsh(target, "list", "--all", "--name").split():
                if self._owner(target, name) == self.spec.name:
                    nodes.append(self._node(target, name))
        return sorted(nodes, key=lambda n: n.name)

    def delete_node(self, name: str) -> None:
        """Destroy and undefine the domain and remove its disks; fine when already gone."""
        target = self._target_for(name)
        owner = self._owner(target, name)
        if owner not in (None, self.spec.name):
            raise ProviderError(f"{name}: the domain on {target.host} is not drover's "
                                f"(cluster {owner or 'none'}); not deleting it")
        if owner is not None:
            self._virsh(target, "destroy", name, check=False)
            try:
                self._virsh(target, "undefine", name)
            except CommandFailed:
                if self._owner(target, name) is not None:
                    raise
        folder = self._folder()
        self._host(target).run(["rm", "-f", f"{folder}/{name}.qcow2", f"{folder}/{name}.xml",
                                f"{folder}/{name}-cidata.iso", f"{folder}/{name}.console.log"],
                               COMMAND_TIMEOUT)
        log.info("%s: domain and volumes removed from %s", name, target.host)

    def timing_scale(self) -> tuple[float, str]:
        return 1.0, f"libvirt ({self.settings.domain_type}), wall-clock time"


register("libvirt")(Libvirt)
