"""Boot files checked by sha256 before the libvirt provider uploads them: local files against
their pins, Image Factory downloads against the pin or trusted on first use (a fake factory
behind httpx.MockTransport serves the bytes; no host is contacted)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import httpx
import pytest

from drover.bootimage import (
    BootImageMismatch,
    fetch_boot_image,
    trust_record,
    verify_file,
)
from drover.errors import StateError
from drover.imagefactory import ImageFactory
from drover.lab.clock import ManualClock
from drover.providers.libvirt import Libvirt
from drover.spec import parse_spec

URL = "https://factory.test/image/abc/v1.13.9/nocloud-amd64.qcow2"
FIELD = "spec.provider.bootImageSha256"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Served:
    """What the fake factory serves at every URL; `body` may change between downloads."""

    def __init__(self, body: bytes) -> None:
        self.body, self.gets = body, 0

    def factory(self, cache: Path) -> ImageFactory:
        def handle(request: httpx.Request) -> httpx.Response:
            self.gets += 1
            return httpx.Response(200, stream=httpx.ByteStream(self.body))
        client = httpx.Client(transport=httpx.MockTransport(handle))
        return ImageFactory("https://factory.test", client=client, cache_dir=cache,
                            clock=ManualClock())


def test_a_pinned_download_that_matches_is_returned_with_its_digest(tmp_path):
    served = Served(b"talos disk v1")

    path, digest = fetch_boot_image(served.factory(tmp_path / "c"), URL, sha(b"talos disk v1"))

    assert path.read_bytes() == b"talos disk v1" and digest == sha(b"talos disk v1")
    assert not trust_record().exists()  # a pin needs no trust on first use


def test_a_pinned_download_that_differs_is_refused_naming_the_pin_and_nothing_is_kept(tmp_path):
    served = Served(b"tampered")

    with pytest.raises(BootImageMismatch, match=rf"sha256 is {sha(b'tampered')}, expected "
                                                rf"{sha(b'good')} \(pinned by {FIELD}\)"):
        fetch_boot_image(served.factory(tmp_path / "c"), URL, sha(b"good"))

    assert not [p for p in (tmp_path / "c").rglob("*.qcow2*")]


def test_unpinned_first_download_is_trusted_and_recorded_saying_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING)

    _, digest = fetch_boot_image(Served(b"v1").factory(tmp_path / "c"), URL, None)

    record = json.loads(trust_record().read_text())
    assert record[URL]["sha256"] == digest == sha(b"v1")
    assert os.stat(trust_record()).st_mode & 0o777 == 0o600
    assert "trusting it on first use" in caplog.text and FIELD in caplog.text


def test_unpinned_later_download_with_other_bytes_is_refused(tmp_path):
    fetch_boot_image(Served(b"v1").factory(tmp_path / "first"), URL, None)

    with pytest.raises(BootImageMismatch, match=rf"sha256 is {sha(b'evil')}, but drover "
                                                rf"recorded {sha(b'v1')} when it first "
                                                r"downloaded it .*trust on first use.*pin it"):
        fetch_boot_image(Served(b"evil").factory(tmp_path / "second"), URL, None)


def test_unpinned_later_download_with_the_same_bytes_passes(tmp_path):
    fetch_boot_image(Served(b"v1").factory(tmp_path / "first"), URL, None)

    path, _ = fetch_boot_image(Served(b"v1").factory(tmp_path / "second"), URL, None)

    assert path.read_bytes() == b"v1"


def test_a_damaged_trust_record_is_named_with_its_recovery(tmp_path):
    trust_record().parent.mkdir(mode=0o700)
    trust_record().write_text("{not json")
    trust_record().chmod(0o600)

    with pytest.raises(StateError, match=r"boot-images.json: damaged .*move it aside"):
        fetch_boot_image(Served(b"v1").factory(tmp_path / "c"), URL, None)


def test_verify_file_checks_the_pin_and_names_the_field(tmp_path):
    image = tmp_path / "talos.qcow2"
    image.write_bytes(b"local disk")

    assert verify_file(image, None, FIELD) == sha(b"local disk")
    assert verify_file(image, sha(b"local disk").upper(), FIELD) == sha(b"local disk")
    with pytest.raises(BootImageMismatch, match=rf"talos.qcow2: sha256 is .* but {FIELD} pins"):
        verify_file(image, sha(b"other"), FIELD)


# ---- the libvirt provider ------------------------------------------------------------------


@pytest.fixture
def libvirt_spec(make_spec, tmp_path):
    def build(**provider):
        data = make_spec(control_planes=1, workers=0).model_dump(by_alias=True)
        data["spec"]["provider"] = {"kind": "libvirt", "hosts": [{"host": "127.0.0.1"}],
                                    **provider}
        return parse_spec(data)
    return build


def test_libvirt_verifies_boot_image_kernel_and_initrd_against_their_pins(libvirt_spec,
                                                                          tmp_path):
    files = {name: tmp_path / name for name in ("disk.qcow2", "vmlinuz", "initramfs.xz")}
    for name, path in files.items():
        path.write_bytes(name.encode())
    spec = libvirt_spec(bootImage=str(files["disk.qcow2"]), bootImageSha256=sha(b"disk.qcow2"),
                        kernel=str(files["vmlinuz"]), kernelSha256=sha(b"vmlinuz"),
                        initrd=str(files["initramfs.xz"]), initrdSha256=sha(b"initramfs.xz"))

    local = Libvirt(spec)._local_files()

    assert {key: digest for key, (_, digest) in local.items()} == {
        "base": sha(b"disk.qcow2"), "kernel": sha(b"vmlinuz"), "initrd": sha(b"initramfs.xz")}


def test_libvirt_refuses_a_kernel_that_is_not_the_pinned_one(libvirt_spec, tmp_path):
    (tmp_path / "disk.qcow2").write_bytes(b"disk")
    (tmp_path / "vmlinuz").write_bytes(b"swapped kernel")
    spec = libvirt_spec(bootImage=str(tmp_path / "disk.qcow2"), kernel=str(tmp_path / "vmlinuz"),
                        kernelSha256=sha(b"the real kernel"))

    with pytest.raises(BootImageMismatch, match=r"vmlinuz: .* spec.provider.kernelSha256 pins"):
        Libvirt(spec)._local_files()


@pytest.mark.parametrize("value", ["abc", "z" * 64, "sha256:" + "0" * 64])
def test_a_pin_that_is_not_a_sha256_is_a_spec_error(libvirt_spec, value):
    with pytest.raises(ValueError, match="bootImageSha256.*64 hexadecimal digits"):
        libvirt_spec(bootImageSha256=value)


def test_a_boot_file_is_hashed_once_while_unchanged_and_again_once_it_changes(tmp_path,
                                                                             monkeypatch):
    import os

    from drover import bootimage

    path = tmp_path / "vmlinuz"
    path.write_bytes(b"kernel v1")
    hashed = []
    real = bootimage.verify_file
    monkeypatch.setattr(bootimage, "verify_file", lambda *a: hashed.append(a) or real(*a))

    assert bootimage.verified_file(path, None, "f")[1] == sha(b"kernel v1")
    assert bootimage.verified_file(path, None, "f")[1] == sha(b"kernel v1")
    path.write_bytes(b"kernel v2")
    os.utime(path, ns=(1, 1))  # another mtime, whatever the file system's resolution

    assert bootimage.verified_file(path, None, "f")[1] == sha(b"kernel v2")
    assert len(hashed) == 2
