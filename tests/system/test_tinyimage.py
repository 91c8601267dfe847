"""The tiny test image boots under QEMU (software emulation) and reads its own cidata:
the marker on the serial console carries the sha256 of the user-data it was given.
The libvirt system tests build on this image."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.system.tinyimage import build

TOOLS = ("qemu-system-x86_64", "qemu-img", "genisoimage", "apt-get", "dpkg-deb", "cpio")


@pytest.fixture(scope="module")
def image() -> tuple[Path, Path]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install {', '.join(missing)} (make system-deps)")
        pytest.skip(f"needs {', '.join(missing)}: run make test as root")
    if not Path("/bin/busybox").exists():
        pytest.skip("needs busybox-static")
    return build()


def cidata(folder: Path, hostname: str, user_data: str) -> Path:
    (folder / "user-data").write_text(user_data)
    (folder / "meta-data").write_text(f"local-hostname: {hostname}\n")
    iso = folder / "cidata.iso"
    subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-V", "cidata", "-r", "-J",
                    str(folder / "user-data"), str(folder / "meta-data")], check=True)
    return iso


def test_the_tiny_image_boots_and_reports_the_hash_of_its_own_config(
        image: tuple[Path, Path], tmp_path: Path) -> None:
    kernel, initrd = image
    config = "version: v1alpha1\nmachine:\n  type: worker\n"
    iso = cidata(tmp_path, "tiny-1", config)
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-m", "256", "-nographic", "-no-reboot", "-accel", "tcg",
         "-kernel", str(kernel), "-initrd", str(initrd),
         "-drive", f"file={disk},if=virtio,format=qcow2",
         "-drive", f"file={iso},if=virtio,format=raw,readonly=on",
         "-nic", "user,model=virtio-net-pci", "-append", "console=ttyS0 panic=-1 quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    watchdog = threading.Timer(120, proc.kill)  # a guest that never finishes fails the test
    watchdog.start()
    seen = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:  # qemu's serial console, line by line, until the last marker
            line = raw.decode(errors="replace")
            if "DROVER-" in line:
                seen.append(line[line.index("DROVER-"):].strip())
            if "DROVER-TINY-DONE" in line:
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=30)

    digest = hashlib.sha256(config.encode()).hexdigest()
    assert f"DROVER-CIDATA host=tiny-1 sha256={digest}" in seen
    assert any(line.startswith("DROVER-NET-UP") for line in seen)
