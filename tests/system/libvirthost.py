"""This machine as a libvirt host for the system test and bench/libvirt.py: libvirtd and
virtlogd started by hand (no systemd here), /dev/kvm given the permissions udev would give
it, and an sshd on 127.0.0.1 that lets the tests in by key.

Why /dev/kvm matters: without udev it stays root-only (0600), while the QEMU capability
probe still reports KVM; libvirt 9 then finds its cached capabilities "enabled when
probing, but not available now" on every lookup and probes QEMU again (about 4 s each,
one at a time) for every define and start. That was the ~32 s define. udev's rule
(`KERNEL=="kvm", GROUP="kvm", MODE="0660"`) makes the two agree and the cache hold.
"""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import time
from pathlib import Path

from drover.files import write_private
from tests.system.sshd import HOST, SSHD, Sshd, _config, _listening, new_key, public_key

URI = "qemu:///system"
KVM = Path("/dev/kvm")


def answers() -> bool:
    return subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, check=False,
                          timeout=60).returncode == 0


def wait_until(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    """Poll a real process until `predicate()` (real daemons: no clock to inject)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def give_kvm_to_its_group() -> str | None:
    """Give /dev/kvm udev's group and mode (root:kvm 0660) when it is root-only; what was
    done, or None when nothing was needed."""
    try:
        info, group = KVM.stat(), grp.getgrnam("kvm")
    except (FileNotFoundError, KeyError):
        return None
    if info.st_gid == group.gr_gid and stat.S_IMODE(info.st_mode) & 0o060 == 0o060:
        return None
    os.chown(KVM, -1, group.gr_gid)
    os.chmod(KVM, 0o660)
    return f"{KVM}: was {stat.filemode(info.st_mode)} gid {info.st_gid}; now root:kvm 0660"


def start_libvirtd() -> list[Path]:
    """Start virtlogd and libvirtd unless libvirtd answers; the pid files of those started."""
    started = []
    if not answers():
        for daemon in ("virtlogd", "libvirtd"):
            subprocess.run([daemon, "-d"], check=True, timeout=60)
            started.append(Path(f"/run/{daemon}.pid"))
        wait_until(answers, 60, "libvirtd to answer", step=0.1)
    return started


def stop_daemons(pidfiles: list[Path]) -> None:
    for pidfile in reversed(pidfiles):
        if pidfile.exists():
            subprocess.run(["kill", pidfile.read_text().strip()], check=False)


def start_sshd(folder: Path, port: int) -> tuple[Sshd, subprocess.Popen[bytes]]:
    """An sshd on 127.0.0.1:`port` with a fresh host key and user key, as tests/system/sshd.py
    makes it (for scripts that run outside pytest); stop the process when done."""
    import getpass

    folder.mkdir(parents=True, exist_ok=True)
    host_private, host_public = new_key()
    user_private, user_public = new_key()
    write_private(folder / "host_ed25519", host_private)
    write_private(folder / "user_ed25519", user_private)
    (folder / "authorized_keys").write_text(user_public + "\n")
    config = folder / "sshd_config"
    config.write_text(_config(folder, port, folder / "host_ed25519", folder / "authorized_keys")
                      .replace("LogLevel DEBUG", "LogLevel INFO"))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(folder / "sshd.log")],
                            start_new_session=True)
    wait_until(lambda: _listening(port), 10, f"sshd on {HOST}:{port}")
    return Sshd(port=port, user=getpass.getuser(), folder=folder,
                host_key=public_key(host_public), user_key_file=folder / "user_ed25519",
                log=folder / "sshd.log"), proc
