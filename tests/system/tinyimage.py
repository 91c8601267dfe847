"""A tiny bootable test image built from Debian packages: the cloud kernel and a busybox
initramfs whose init brings up the network by DHCP, reads the cidata disk (Talos
nocloud's user-data and meta-data) and prints a marker with the config's hash on the
serial console, then idles like a node would.

Built once into a cache folder ($DROVER_TEST_CACHE, default ~/.cache/drover-test-image)
with `apt-get download`, `dpkg-deb -x` and `cpio`; nothing is installed on the machine.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "virtio_blk", "failover", "net_failover", "virtio_net", "cdrom",
           "isofs"]

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "DROVER-TINY-UP"
for m in {modules}; do insmod /lib/modules/$m.ko 2>/dev/null; done
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


def build() -> tuple[Path, Path]:
    """(vmlinuz, initramfs.cpio.gz), built once and cached (again when the init changes)."""
    folder = cache_dir()
    kernel, initrd, stamp = folder / "vmlinuz", folder / "initramfs.cpio.gz", folder / "init.sha256"
    version = hashlib.sha256((INIT + DHCP_SCRIPT + " ".join(MODULES)).encode()).hexdigest()
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
        (root / "init").write_text(INIT.format(modules=" ".join(MODULES)))
        (root / "init").chmod(0o755)
        script = root / "usr" / "share" / "udhcpc" / "default.script"
        script.parent.mkdir(parents=True)
        script.write_text(DHCP_SCRIPT)
        script.chmod(0o755)
        archive = subprocess.run("find . | cpio -o -H newc --quiet", shell=True, cwd=root,
                                 check=True, capture_output=True).stdout
        tmp_initrd = initrd.with_suffix(".tmp")
        tmp_initrd.write_bytes(gzip.compress(archive, 9))
        tmp_kernel = kernel.with_suffix(".tmp")
        shutil.copy(next((work / "root" / "boot").glob("vmlinuz-*")), tmp_kernel)
        tmp_initrd.replace(initrd)
        tmp_kernel.replace(kernel)
    for path in (kernel, initrd):
        path.chmod(0o644)  # qemu runs as libvirt-qemu and reads them
    stamp.write_text(version)
    return kernel, initrd
