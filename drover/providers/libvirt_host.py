"""One libvirt host as drover's libvirt provider drives it: a pooled SSH connection (its
opening timed once), `virsh` commands batched into one virsh process per question (one
connection to libvirtd, not one per fact), boot files uploaded once per host under their
content hash (a marker written after the verified upload lets later runs skip them with
one `stat`), a node created in one shell on the host (overlay, cidata written 0600 from
its first byte, define, start: one round trip, each step timed there and recorded here),
and waits on a node's serial console that follow the file on the host (`tail -F`, woken
by inotify: no polling loop here or there) and return the moment the line is there.
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
from drover.errors import ProviderError
from drover.provider_settings import LibvirtProvider, SshTarget
from drover.spec import NodeSpec
from drover.ssh import CommandResult, CommandTimeout, Connection, connect

NAMESPACE = "https://drover.dev/xmlns/node/1"

COMMAND_TIMEOUT = 120.0
_MARK = "@@drover@@"
_SECTION = re.compile(re.escape(_MARK) + r"(\S+?)@@")
_STEP = re.compile(r"^@@step (\S+) ([0-9.]+) ([0-9.]+)$", re.MULTILINE)
_T0 = re.compile(r"^@@t0 ([0-9.]+)$", re.MULTILINE)
_NOW = 'now() { date +%s.%N; }; echo "@@t0 $(now)"; '
# $1 uri $2 name $3 folder $4 console $5 base $6 disk $7 size $8 cidata (or '') $9 its bytes;
# stdin: the cidata bytes, then the domain XML
_CREATE = _NOW + """set -e
if virsh -q -c "$1" domuuid "$2" </dev/null >/dev/null 2>&1; then echo @@exists; exit 0; fi
s=$(now); mkdir -p "$3"; rm -f "$4"
qemu-img create -q -f qcow2 -b "$5" -F qcow2 "$6" "$7" </dev/null; echo "@@step qemu-img $s $(now)"
if [ -n "$8" ]; then
  s=$(now); (umask 077; head -c "$9" >"$8.part"); mv -f "$8.part" "$8"
  echo "@@step cidata $s $(now)"; fi
s=$(now); virsh -q -c "$1" define /dev/stdin >/dev/null; echo "@@step define $s $(now)"
s=$(now); virsh -q -c "$1" start "$2" </dev/null >/dev/null; echo "@@step start $s $(now)"
"""
# $1 console $2 pattern (or ''): its first line, then the first match of $2 in it, read as
# the file grows (tail -F sleeps on inotify); the follower is stopped when done
_FOLLOW = _NOW + r"""f=$(mktemp -u); mkfifo -m 600 "$f"
tail -c +1 -s 0.1 -F "$1" >"$f" 2>/dev/null & t=$!
trap 'kill $t 2>/dev/null; rm -f "$f"' EXIT; trap 'exit 1' INT TERM
{ s=$(now); IFS= read -r line || exit 1; echo "@@step first-console-line $s $(now)"
  [ -n "$2" ] || exit 0
  s=$(now); printf '%s\n' "$line" | grep -aoE -m1 "$2" || grep -aoE -m1 "$2" || exit 1
  echo "@@step address $s $(now)"; } <"$f"
"""
_STEP_NAMES = {"first-console-line": "first console line"}  # one word each in the scripts
_MARKER = '[ "$(cat "$1.sha256" 2>/dev/null)" = "$2 $(stat -c %s.%Y "$1" 2>/dev/null)" ]'

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
                # there from an earlier run: its marker names this hash, size and mtime
                if connection.run(["sh", "-c", _MARKER, "sh", remote, digest], COMMAND_TIMEOUT,
                                  check=False).exit_status != 0:
                    connection.run(["mkdir", "-p", folder], COMMAND_TIMEOUT)
                    sent = connection.upload(local, remote, mode=0o644)  # qemu reads it
                    if sent.sha256 != digest:  # the local file changed after it was verified
                        raise BootImageMismatch(
                            f"{local}: changed while drover was uploading it to "
                            f"{self.target.host} (sha256 {sent.sha256}, verified {digest})")
                    connection.run(["sh", "-c", 'echo "$2 $(stat -c %s.%Y "$1")" >"$1.sha256"',
                                    "sh", remote, digest], COMMAND_TIMEOUT)
            with _lock:
                _uploaded[key] = remote
        return remote

    def write_private(self, remote: str, data: bytes) -> None:
        """Write `data` to `remote` (0600 from its first byte, renamed into place)."""
        self.run(["sh", "-c", 'umask 077 && cat > "$1.part" && mv -f "$1.part" "$1"', "sh",
                  remote], stdin=data)

    # ---- a node in one round trip ----------------------------------------------------------
    def create_domain(self, node: str, paths: dict[str, str], size: str, cidata: bytes,
                      xml: str, timeout: float) -> bool:
        """On the host, in one shell: the overlay `paths['disk']` on `paths['base']` (an old
        console removed), the cidata disk `paths['cidata']` (0600, skipped when ''), the
        domain defined from `xml` and started; each step recorded under `node`. False when
        a domain of that name exists (nothing done). ProviderError naming the failed step."""
        argv = ["sh", "-c", _CREATE, "sh", self.uri, node, paths["folder"], paths["console"],
                paths["base"], paths["disk"], size, paths["cidata"], str(len(cidata))]
        out = self._timed_script(node, argv, ["qemu-img", *(["cidata"] if paths["cidata"]
                                                              else []), "define", "start"],
                                 timeout, cidata + xml.encode())
        return "@@exists" not in out

    def follow_console(self, node: str, console: str, pattern: str | None,
                       timeout: float) -> str:
        """Wait on the host for `console`'s first line, then (with `pattern`, an extended
        regex) for its first match, which is returned; both recorded under `node`.
        CommandTimeout past `timeout`."""
        argv = ["sh", "-c", _FOLLOW, "sh", console, pattern or ""]
        out = self._timed_script(node, argv, ["first-console-line", *(["address"] if pattern
                                                                        else [])], timeout)
        return "\n".join(line for line in out.splitlines() if not line.startswith("@@"))

    def _timed_script(self, node: str, argv: list[str], expected: list[str], timeout: float,
                      stdin: bytes | None = None) -> str:
        """Run a host script that prints `@@t0 <time>` and `@@step <name> <start> <end>` (host
        clock); its steps recorded on this clock from when it was sent, the first missing
        one as failed when it fails or times out."""
        sent = self.clock.now()
        try:
            result = self.run(argv, timeout, stdin, check=False)
            out, err, failed = result.stdout, result.stderr, result.exit_status != 0
        except CommandTimeout as exc:
            out, err, failed = exc.stdout, exc.stderr, True
            self._record_steps(node, sent, out, expected, failed)
            raise
        self._record_steps(node, sent, out, expected, failed)
        if failed:
            done = {m.group(1) for m in _STEP.finditer(out)}
            step = next((s for s in expected if s not in done), expected[-1])
            raise ProviderError(f"{node}: {step.replace('-', ' ')} failed on "
                                f"{self.target.host}: {err.strip()[-500:] or 'no message'}")
        return out

    def _record_steps(self, node: str, sent: float, out: str, expected: list[str],
                      failed: bool) -> None:
        t0 = _T0.search(out)
        origin = float(t0.group(1)) if t0 else 0.0
        done = {}
        for m in _STEP.finditer(out):
            start, end = float(m.group(2)), float(m.group(3))
            done[m.group(1)] = (sent + start - origin, end - start)
        end = max((s + d for s, d in done.values()), default=sent)
        for step in expected:
            if step in done:
                steps.record(self.cluster, steps.StepTime(node, _named(step),
                                                          *done[step]))
            elif failed:  # the step that was under way when the script stopped
                steps.record(self.cluster, steps.StepTime(node, _named(step), end,
                                                          self.clock.now() - end, ok=False))
                return

    # ---- the serial console --------------------------------------------------------------

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


def _named(step: str) -> str:
    return _STEP_NAMES.get(step, step)


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
