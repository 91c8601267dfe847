"""The libvirt provider against the real thing: libvirtd and QEMU (software emulation)
on this machine, reached over SSH through a real sshd on 127.0.0.1. Three tiny VMs
boot with their own machine configs on cidata disks (the lab emulates Talos on top);
a second deploy adopts them; destroy leaves no domain and no volume. Every provider call
is timed per node (drover/steps.py): one SSH connection and one upload per boot file serve
all three nodes. The VMs use QEMU user networking, so no traffic leaves QEMU's own
network stack."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drover.home import cluster_dir
from drover.machineconfig import load_secrets, render_node_yaml
from drover.spec import load_spec
from tests.system.conftest import REPO, Server, wait_for
from tests.system.libvirthost import give_kvm_to_its_group, start_libvirtd, stop_daemons
from tests.system.sshd import Sshd, sshd  # noqa: F401 (fixture)
from tests.system.tinyimage import build

URI = "qemu:///system"
NEEDED = ("virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "genisoimage")


def virsh(*args: str, check: bool = True) -> str:
    return subprocess.run(["virsh", "-q", "-c", URI, *args], check=check, capture_output=True,
                          text=True, timeout=120).stdout


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[None]:
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run as root with {', '.join(missing) or 'libvirt'} installed")
        pytest.skip(f"needs root and {', '.join(missing) or 'libvirt'} (make test as root)")
    give_kvm_to_its_group()  # else libvirt probes QEMU again for every define (~4 s each)
    started = start_libvirtd()  # no systemd here: by hand, and stopped after
    yield
    stop_daemons(started)


@pytest.fixture
def storage() -> Iterator[Path]:
    # under libvirt's images folder: qemu runs as its own user and must reach the files
    folder = Path("/var/lib/libvirt/images") / f"drover-test-{uuid.uuid4().hex[:8]}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def libvirt_config(tmp_path: Path, ssh: Sshd, storage: Path, name: str) -> Path:
    kernel, initrd = build()
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh.known_hosts_line)
    data = yaml.safe_load((REPO / "configs" / "examples" / "libvirt-local.yaml").read_text())
    data["metadata"]["name"] = name
    provider = data["spec"]["provider"]
    provider["hosts"] = [{"host": "127.0.0.1", "port": ssh.port, "user": ssh.user,
                          "keyFile": str(ssh.user_key_file), "knownHosts": str(known_hosts)}]
    provider.update(storageDir=str(storage), bootImage=str(base), kernel=str(kernel),
                    initrd=str(initrd))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def drover(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "drover.cli", *args], cwd=REPO,
                            env=server.env | {"DROVER_HOME": os.environ["DROVER_HOME"]} | env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"drover {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def ours(name: str) -> list[str]:
    return sorted(d for d in virsh("list", "--all", "--name").split() if d.startswith(name))


def test_vms_boot_with_their_own_config_are_adopted_on_rerun_and_destroyed_without_trace(
        libvirtd: None, sshd: Sshd, prefect_server: Server, storage: Path,  # noqa: F811
        tmp_path: Path) -> None:
    name = f"lv{uuid.uuid4().hex[:6]}"
    config = libvirt_config(tmp_path, sshd, storage, name)
    spec = load_spec(config)
    timings = tmp_path / "steps.jsonl"
    try:
        drover(prefect_server, "deploy", str(config), DROVER_STEPS_FILE=str(timings))

        nodes = [n.name for n in spec.declared_nodes()]
        taken = [json.loads(line) for line in timings.read_text().splitlines()]
        for node in nodes:  # every provider call of the path, timed under its node
            assert {s["step"] for s in taken if s["node"] == node} >= {
                "qemu-img", "cidata", "define", "start", "first console line", "address"}
        shared = [(s["node"], s["step"]) for s in taken if s["node"] not in nodes]
        host = f"127.0.0.1:{sshd.port}"
        assert shared.count((host, "ssh connect")) == 1  # one connection for every node
        assert shared.count((host, "upload")) == 3       # base, kernel, initrd: once each
        assert ours(name) == nodes
        uuids = {n: virsh("domuuid", n).strip() for n in nodes}
        secrets = load_secrets(cluster_dir(name))
        for node in spec.declared_nodes():
            digest = hashlib.sha256(render_node_yaml(spec, node, secrets).encode()).hexdigest()
            console = storage / name / f"{node.name}.console.log"
            wait_for(lambda c=console: "DROVER-TINY-DONE" in c.read_text(errors="replace"),
                     120, f"{node.name} to finish booting")
            text = console.read_text(errors="replace")
            assert f"DROVER-CIDATA host={node.name} sha256={digest}" in text
            iso = storage / name / f"{node.name}-cidata.iso"
            assert iso.stat().st_mode & 0o077 == 0  # the config's secrets: owner only
            assert "-----BEGIN" not in text

        again = drover(prefect_server, "deploy", str(config))
        assert "nothing to do" in again.stdout
        assert {n: virsh("domuuid", n).strip() for n in nodes} == uuids  # adopted, not new

        status = drover(prefect_server, "status", name, "--json")
        assert len(re.findall(r'"ready": true', status.stdout)) == 3
    finally:
        drover(prefect_server, "destroy", name, "--yes")

    assert ours(name) == []
    folder = storage / name
    assert (sorted(p.name for p in folder.iterdir()) if folder.exists() else []) == []
