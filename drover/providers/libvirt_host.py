"""One libvirt host as drover's libvirt provider drives it: a pooled SSH connection (its
opening timed once), `virsh` commands batched into one virsh process per question (one
connection to libvirtd, not one per fact), boot files uploaded once per host and process
under their content hash, small private files written through stdin (0600 from the
start), and waits on a node's serial console file that run on the host and return the
moment the line is there, rather than polling from here.
"""

from __future__ import annotations

import re
import shlex
import threading
import weakref
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from drover import retry, steps
from drover.bootimage import BootImageMismatch
from drover.clock import Clock
from drover.provider_settings import LibvirtProvider, SshTarget
from drover.spec import NodeSpec
from drover.ssh import CommandResult, Connection, connect

NAMESPACE = "https://drover.dev/xmlns/node/1"

COMMAND_TIMEOUT = 120.0
_MARK = "@@drover@@"
_SECTION = re.compile(re.escape(_MARK) + r"(\S+?)@@")
_CONSOLE_WAIT = 0.05  # seconds between the host's looks at a console file (a local stat)

_lock = threading.Lock()
_reported: weakref.WeakKeyDictionary[Connection, set[str]] = weakref.WeakKeyDictionary()
_uploaded: dict[tuple[str, int, str, str], str] = {}      # (host, port, remote, sha) -> remote
_uploading: dict[tuple[str, int, str, str], threading.Lock] = {}


@dataclass(frozen=True)
class Domain:
    name: str
    state: str                  # running, shut off, ... as virsh says it
    uuid: str
    meta: dict[str, str]        # drover's metadata: cluster, node, role, pool ({} if none)


class Host:
    """The provider's handle on one host; cheap to make (the connection is pooled)."""

    def __init__(self, target: SshTarget, uri: str, cluster: str, clock: Clock) -> None:
        self.target, self.uri, self.cluster, self.clock = target, uri, cluster, clock
        self.label = f"{target.host}:{target.port}"

    def timed(self, node: str, step: str) -> AbstractContextManager[None]:
        return steps.timed(self.cluster, node, step, self.clock)

    @property
    def connection(self) -> Connection:
        connection = retry.call(retry.api_call(self.clock), connect, self.target)
        with _lock:
            seen = _reported.setdefault(connection, set())
            first = self.cluster not in seen
            seen.add(self.cluster)
        if first:  # the handshake this cluster's calls waited for, recorded once
            steps.record(self.cluster, steps.StepTime(
                self.label, "ssh connect", connection.opened_at, connection.connect_seconds))
        return connection

    def run(self, command: list[str], timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None,
            check: bool = True) -> CommandResult:
        return self.connection.run(command, timeout, stdin, check=check)

    # ---- virsh ---------------------------------------------------------------------------
    def virsh(self, *args: str, check: bool = True, stdin: bytes | None = None,
              timeout: float = COMMAND_TIMEOUT) -> str:
        result = self.run(["virsh", "-q", "-c", self.uri, *args], timeout, stdin, check)
        return result.stdout if result.exit_status == 0 else ""

    def virsh_batch(self, commands: dict[str, list[str]]) -> dict[str, str]:
        """Run virsh commands in one virsh process; each one's output by key ('' when it
        failed: virsh goes on after a failed command)."""
        if not commands:
            return {}
        script = "; ".join(f"echo {_MARK}{key}@@; {shlex.join(argv)}"
                           for key, argv in commands.items())
        out = self.run(["virsh", "-q", "-c", self.uri, script], check=False).stdout
        parts = _SECTION.split(out)
        found = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        return {key: found.get(key, "") for key in commands}

    def domains(self, names: list[str], namespace: str) -> dict[str, Domain]:
        """The named domains that exist, with state, UUID and drover's metadata."""
        answers = self.virsh_batch({f"{kind}:{n}": ([kind, n] if kind == "dominfo" else
                                                     ["metadata", n, namespace])
                                    for n in names for kind in ("dominfo", "meta")})
        found = {}
        for name in names:
            info = dict(re.findall(r"^([A-Za-z ]+):\s*(.*?)\s*$", answers[f"dominfo:{name}"],
                                   re.MULTILINE))
            if info.get("UUID"):
                found[name] = Domain(name, info.get("State", "unknown"), info["UUID"],
                                     dict(re.findall(r'(\w+)="([^"]*)"', answers[f"meta:{name}"])))
        return found

    # ---- files ---------------------------------------------------------------------------
    def upload_once(self, local: Path, digest: str, folder: str) -> str:
        """`local` (sha256 `digest`, verified) at `folder`/<hash>-<name> on the host, sent at
        most once per host and process; the host's copy must hash to `digest` too."""
        remote = f"{folder}/{digest[:16]}-{local.name}"
        key = (self.target.host, self.target.port, remote, digest)
        with _lock:
            if key in _uploaded:
                return remote
            guard = _uploading.setdefault(key, threading.Lock())
        with guard:  # the nodes of a host wait for one upload of each file
            if key in _uploaded:
                return remote
            with self.timed(self.label, "upload"):
                connection = self.connection
                connection.run(["mkdir", "-p", folder], COMMAND_TIMEOUT)
                sent = connection.upload(local, remote, mode=0o644)  # qemu reads it
                if sent.sha256 != digest:  # the local file changed after it was verified
                    raise BootImageMismatch(
                        f"{local}: changed while drover was uploading it to {self.target.host} "
                        f"(sha256 {sent.sha256}, verified {digest})")
            with _lock:
                _uploaded[key] = remote
        return remote

    def write_private(self, remote: str, data: bytes) -> None:
        """Write `data` to `remote` (0600 from its first byte, renamed into place)."""
        self.run(["sh", "-c", 'umask 077 && cat > "$1.part" && mv -f "$1.part" "$1"', "sh",
                  remote], stdin=data)

    # ---- the serial console --------------------------------------------------------------
    def await_console(self, console: str, pattern: str | None, timeout: float) -> str:
        """Wait on the host until `console` has a first line (pattern None) or a line
        matching the extended regex `pattern`; the matches. CommandTimeout past `timeout`."""
        if pattern is None:
            script = f'until [ -s "$1" ]; do sleep {_CONSOLE_WAIT}; done'
            return self.run(["sh", "-c", script, "sh", console], timeout).stdout
        script = f'until grep -aoE "$2" "$1" 2>/dev/null; do sleep {_CONSOLE_WAIT}; done'
        return self.run(["sh", "-c", script, "sh", console, pattern], timeout).stdout

    def grep_consoles(self, consoles: dict[str, str], pattern: str) -> dict[str, list[str]]:
        """Lines matching `pattern` in each console file (by key); a missing file has none."""
        if not consoles:
            return {}
        out = self.run(["grep", "-aHoE", pattern, "--", *consoles.values()],
                       check=False).stdout
        by_path: dict[str, list[str]] = {}
        for line in out.splitlines():
            path, _, match = line.rpartition(":")  # the matches hold no colon
            by_path.setdefault(path, []).append(match)
        return {key: by_path.get(path, []) for key, path in consoles.items()}


def domain_xml(cluster: str, settings: LibvirtProvider, node: NodeSpec, disk: str, cidata: str,
               boot: dict[str, str], console: str, domain_uuid: str) -> str:
    """The domain of `node`: drover's metadata, the overlay disk (and the read-only cidata
    disk), direct kernel boot when a kernel is given, its NIC and a file serial console."""
    kernel = ""
    if "kernel" in boot:
        kernel = (f"<kernel>{escape(boot['kernel'])}</kernel>"
                  + (f"<initrd>{escape(boot['initrd'])}</initrd>" if "initrd" in boot else "")
                  + f"<cmdline>{escape(settings.cmdline)}</cmdline>")
    nic = ("<interface type='user'><model type='virtio'/></interface>"
           if settings.network == "user" else
           f"<interface type='network'><source network={quoteattr(settings.network)}/>"
           "<model type='virtio'/></interface>")
    cidata_disk = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                   f"<source file={quoteattr(cidata)}/><target dev='vdb' bus='virtio'/>"
                   "<readonly/></disk>") if cidata else ""
    return f"""<domain type='{settings.domain_type}'>
  <name>{escape(node.name)}</name>
  <uuid>{escape(domain_uuid)}</uuid>
  <metadata><drover:node xmlns:drover='{NAMESPACE}' cluster={quoteattr(cluster)}
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
