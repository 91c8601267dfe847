"""A tiny bootable test image built from Debian packages: the cloud kernel and a busybox
initramfs whose init reads the cidata disk (Talos nocloud's user-data and meta-data),
prints a marker with the config's hash on the serial console, brings up the network by
DHCP, then idles like a node would.

Shaped for boot time under QEMU software emulation (measured in CPU seconds of the QEMU
process to the hash marker, 2026-11-30: 2.9 s before, about 1.6 s after): the kernel is
the bzImage's uncompressed ELF, which QEMU boots through its PVH entry (no decompressor
run under emulation; the bzImage when `lz4` is missing); the initramfs is an uncompressed
cpio with busybox's links made here rather than by the guest; the disk and ISO modules
load before the hash is read and the network's after. With `acpi=off cryptomgr.notests`
on the kernel command line (configs/examples/libvirt-local.yaml) the guest skips the ACPI
interpreter and the crypto self-tests, the two slowest parts of its boot under emulation.

Built once into a cache folder ($DROVER_TEST_CACHE, default ~/.cache/drover-test-image)
with `apt-get download`, `dpkg-deb -x`, `lz4` and `cpio`; nothing is installed here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

DISK_MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                "virtio_pci", "virtio_blk", "cdrom", "isofs"]
NET_MODULES = ["failover", "net_failover", "virtio_net"]
MODULES = DISK_MODULES + NET_MODULES
LZ4_MAGIC = b"\x02\x21\x4c\x18"  # the legacy LZ4 frame the kernel's decompressor reads

INIT = """#!/bin/busybox sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "DROVER-TINY-UP"
for m in {disk_modules}; do insmod /lib/modules/$m.ko 2>/dev/null; done
mkdir -p /mnt /var/run
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  for d in /dev/vd?; do
    [ -b "$d" ] && mount -t iso9660 -o ro "$d" /mnt 2>/dev/null && break 2
  done
  sleep 0.2
done
if grep -q " /mnt " /proc/mounts; then
    if [ -f /mnt/user-data ]; then
      name=$(sed -n 's/^local-hostname: *//p' /mnt/meta-data)
      hash=$(sha256sum /mnt/user-data | cut -d' ' -f1)
      echo "DROVER-CIDATA host=$name sha256=$hash"
      hostname "$name"
    fi
    umount /mnt
else
  echo "DROVER-CIDATA none"
fi
ip link set lo up
for m in {net_modules}; do insmod /lib/modules/$m.ko 2>/dev/null; done
# no -n: on a starved host (many TCG guests on few cores) it keeps asking, never gives up
ip link set eth0 up && udhcpc -i eth0 -s /usr/share/udhcpc/default.script -q -t 5 -T 2 \\
  -A 1 -x hostname:"$(hostname)" && echo "DROVER-NET-UP $(ip -4 -o addr show eth0)"
echo "DROVER-TINY-DONE"
while true; do sleep 3600; done
"""

DHCP_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" ;;
esac
"""


def cache_dir() -> Path:
    return Path(os.environ.get("DROVER_TEST_CACHE")
                or Path.home() / ".cache" / "drover-test-image")


def _kernel_package() -> str:
    out = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        word = line.strip().removeprefix("Depends: ")
        if word.startswith("linux-image-") and word[len("linux-image-"):][:1].isdigit():
            return word
    raise RuntimeError("no versioned linux-image-*-cloud-amd64 package found; apt-get update?")


def _uncompressed(bzimage: Path, out: Path) -> bool:
    """Write the ELF kernel inside an LZ4 bzImage to `out` (QEMU boots it by PVH); False
    when the image is not LZ4 or `lz4` is missing (then the bzImage is used)."""
    data = bzimage.read_bytes()
    start = data.find(LZ4_MAGIC)
    if start < 0 or shutil.which("lz4") is None:
        return False
    elf = subprocess.run(["lz4", "-dc"], input=data[start:], capture_output=True,
                         check=False).stdout  # trailing bytes after the frame: rc 1, data ok
    if not elf.startswith(b"\x7fELF"):
        return False
    out.write_bytes(elf)
    return True


def _link_applets(root: Path) -> None:
    """busybox's applet links, made here so that the guest's init does not make them."""
    listed = subprocess.run([str(root / "bin" / "busybox"), "--list-full"], check=True,
                            capture_output=True, text=True).stdout.split()
    for applet in listed:
        link = root / applet
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")


def build() -> tuple[Path, Path]:
    """(kernel, initramfs.cpio), built once and cached (again when the init changes): the
    kernel is vmlinux (uncompressed ELF) when it could be extracted, else vmlinuz."""
    folder = cache_dir()
    initrd, stamp = folder / "initramfs.cpio", folder / "init.sha256"
    version = hashlib.sha256((INIT + DHCP_SCRIPT + " ".join(MODULES) + "pvh,cpio").encode()
                             ).hexdigest()
    kernel = next((k for k in (folder / "vmlinux", folder / "vmlinuz") if k.exists()),
                  folder / "vmlinuz")
    if kernel.exists() and initrd.exists() and stamp.exists() and stamp.read_text() == version:
        return kernel, initrd
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt-get download runs as _apt when it can
        subprocess.run(["apt-get", "download", _kernel_package()], cwd=work, check=True,
                       capture_output=True)
        deb = next(work.glob("linux-image-*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
        root = work / "initramfs"
        for sub in ("bin", "lib/modules", "proc", "sys", "dev", "mnt", "etc"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        modules = work / "root" / "lib" / "modules"
        for name in MODULES:
            found = next(modules.rglob(f"{name}.ko"), None)
            if found is None:
                raise RuntimeError(f"kernel module {name}.ko not in {deb.name}")
            shutil.copy(found, root / "lib" / "modules" / f"{name}.ko")
        _link_applets(root)
        (root / "init").write_text(INIT.format(disk_modules=" ".join(DISK_MODULES),
                                               net_modules=" ".join(NET_MODULES)))
        (root / "init").chmod(0o755)
        script = root / "usr" / "share" / "udhcpc" / "default.script"
        script.parent.mkdir(parents=True)
        script.write_text(DHCP_SCRIPT)
        script.chmod(0o755)
        archive = subprocess.run("find . | cpio -o -H newc --quiet", shell=True, cwd=root,
                                 check=True, capture_output=True).stdout
        tmp_initrd = initrd.with_suffix(".tmp")
        tmp_initrd.write_bytes(archive)  # uncompressed: no inflate under emulation
        bzimage = next((work / "root" / "boot").glob("vmlinuz-*"))
        tmp_kernel = folder / "kernel.tmp"
        kernel = folder / "vmlinux"
        if not _uncompressed(bzimage, tmp_kernel):
            shutil.copy(bzimage, tmp_kernel)
            kernel = folder / "vmlinuz"
        for stale in (folder / "vmlinux", folder / "vmlinuz", folder / "initramfs.cpio.gz"):
            stale.unlink(missing_ok=True)
        tmp_initrd.replace(initrd)
        tmp_kernel.replace(kernel)
    for path in (kernel, initrd):
        path.chmod(0o644)  # qemu runs as libvirt-qemu and reads them
    stamp.write_text(version)
    return kernel, initrd
