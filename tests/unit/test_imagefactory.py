"""drover.imagefactory: contract tests against a fake Image Factory shaped on the documented API.

No Image Factory can run here, so FakeFactory stands in for it behind an httpx.MockTransport:
it implements what image-factory's docs/api.md and internal/profile describe (POST /schematics
computing the id as sha256 of the canonical YAML, GET /schematics/:id, /versions,
/version/:v/extensions/official, /image/:id/:v/:path with its path grammar, Range requests and
a 302 to a CDN) plus scriptable faults. Its canonical YAML is written here independently of
drover.machineconfig.render, and checked against the published ids, so the ids agree for a
reason. No network, no real sleep (retries wait on a ManualClock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from drover.errors import RetriesExhausted
from drover.imagefactory import (
    BootAssets,
    ChecksumMismatch,
    FactoryRefused,
    ImageFactory,
    UnknownExtension,
    UnknownVersion,
    UnsafeFactoryURL,
)
from drover.lab.clock import ManualClock
from drover.machineconfig.render import installer_image as render_installer_image
from drover.spec import ClusterSpec, parse_spec

BASE = "https://factory.test"
CDN = "https://cdn.test"
VANILLA_ID = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
QEMU_AGENT_ID = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
VERSIONS = ["v1.7.0", "v1.9.6", "v1.10.0", "v1.13.9", "v1.14.0-rc.1"]
EXTENSIONS = ["siderolabs/qemu-guest-agent", "siderolabs/iscsi-tools", "siderolabs/gvisor",
              "siderolabs/util-linux-tools", "siderolabs/amd-ucode", "siderolabs/intel-ucode",
              "siderolabs/v4l-uvc-drivers"]
SIZE = 200_000  # bytes of every fake boot asset: several chunks, and a cut mid-body


# --- the fake factory -------------------------------------------------------------------------

def go_yaml(body: dict[str, Any]) -> str:
    """The canonical form the factory hashes (Go yaml.v3, 4-space indent, fields in struct
    order), for the fields these tests send; `owner` stands for a field the factory adds."""
    custom = body.get("customization") or {}
    lines: list[str] = []
    if custom.get("extraKernelArgs"):
        lines += ["    extraKernelArgs:"] + [f"        - {a}" for a in custom["extraKernelArgs"]]
    extensions = (custom.get("systemExtensions") or {}).get("officialExtensions")
    if extensions:
        lines += ["    systemExtensions:", "        officialExtensions:"]
        lines += [f"            - {e}" for e in extensions]
    text = "customization:\n" + "".join(f"{line}\n" for line in lines) if lines \
        else "customization: {}\n"
    return text + (f"owner: {body['owner']}\n" if body.get("owner") else "")


class Body(httpx.SyncByteStream):
    """A body read off the wire in chunks (httpx reads a plain `content=` eagerly); with `cut`,
    it stops after that many bytes, as a connection reset mid-transfer does."""

    def __init__(self, data: bytes, cut: int | None = None) -> None:
        self.data, self.cut = data, cut

    def __iter__(self) -> Iterator[bytes]:
        end = len(self.data) if self.cut is None else self.cut
        for start in range(0, end, 16_384):
            yield self.data[start:min(start + 16_384, end)]
        if self.cut is not None:
            raise httpx.ReadError("connection reset by peer")


class FakeFactory:
    """The factory and its CDN. Faults: `fail_5xx` (next n requests answer 500), `time_out`
    (next n raise ReadTimeout), `drops` (next n asset bodies break after `cut` bytes);
    `redirect` sends assets through a 302 to the CDN; `ranges=False` ignores Range."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.schematics: dict[str, str] = {VANILLA_ID: "customization: {}\n"}
        self.fail_5xx = self.time_out = self.drops = 0
        self.cut = 50_000
        self.redirect = False
        self.ranges = True
        self.owner: str | None = None  # set: the factory adds it to every schematic
        self.legacy = False  # True: POST /schematics answers {id} only (before 2026-05)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def asset_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if "/image/" in r.url.path or r.url.host == "cdn.test"]

    @staticmethod
    def content(path: str) -> bytes:
        seed = hashlib.sha256(path.encode()).digest()
        return (seed * (SIZE // len(seed) + 1))[:SIZE]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.time_out:
            self.time_out -= 1
            raise httpx.ReadTimeout("timed out", request=request)
        if self.fail_5xx:
            self.fail_5xx -= 1
            return httpx.Response(500, text="internal error\n")
        path = request.url.path
        if request.url.host == "cdn.test":
            return self.serve(request, path.removeprefix("/blobs"))
        if request.method == "POST" and path == "/schematics":
            return self.create(request)
        if match := re.fullmatch(r"/schematics/(\w+)", path):
            text = self.schematics.get(match[1])
            return (httpx.Response(200, text=text, headers={"Content-Type": "application/yaml"})
                    if text else httpx.Response(404, text="schematic not found\n"))
        if path == "/versions":
            return httpx.Response(200, json=VERSIONS)
        if match := re.fullmatch(r"/version/([^/]+)/extensions/official", path):
            if match[1] not in VERSIONS:
                return httpx.Response(404, text=f"version {match[1]} not found\n")
            return httpx.Response(200, json=[
                {"name": n, "ref": f"ghcr.io/{n}:fake", "digest": "sha256:" + "0" * 64,
                 "author": "Sidero Labs", "description": n} for n in EXTENSIONS])
        if match := re.fullmatch(r"/image/(\w+)/([^/]+)/([^/]+)", path):
            return self.image(request, *match.groups())
        return httpx.Response(404, text="not found\n")

    def create(self, request: httpx.Request) -> httpx.Response:
        body = yaml.safe_load(request.content) or {}
        if set(body) - {"customization", "overlay"}:
            return httpx.Response(400, text="unknown field in schematic\n")
        canonical = go_yaml({**body, "owner": self.owner})
        schematic_id = hashlib.sha256(canonical.encode()).hexdigest()
        self.schematics[schematic_id] = canonical
        answer = {"id": schematic_id} if self.legacy else {"id": schematic_id,
                                                          "schematic": canonical}
        return httpx.Response(201, json=answer)

    def image(self, request: httpx.Request, schematic: str, version: str,
              asset: str) -> httpx.Response:
        if schematic not in self.schematics:
            return httpx.Response(404, text="schematic not found\n")
        if version not in VERSIONS:
            return httpx.Response(404, text=f"version {version} not found\n")
        if not valid_profile_path(asset):
            return httpx.Response(400, text=f'invalid profile path: "{asset}"\n')
        key = f"/{schematic}/{version}/{asset}"
        if self.redirect:
            return httpx.Response(302, headers={"Location": f"{CDN}/blobs{key}"})
        return self.serve(request, key)

    def serve(self, request: httpx.Request, key: str) -> httpx.Response:
        data = self.content(key)
        start = 0
        status, headers = 200, {"Content-Type": "application/octet-stream"}
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if match and self.ranges:
            start = int(match[1])
            if start >= len(data):
                return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        cut = None
        if self.drops:
            self.drops -= 1
            cut = self.cut
        return httpx.Response(status, headers=headers, stream=Body(body, cut))


def valid_profile_path(path: str) -> bool:
    """internal/profile ParseFromPath: fixed names, else a disk image with a known format."""
    platform_arch = r"[a-z]+(?:-ocean)?-(?:amd64|arm64)(?:-secureboot)?"
    fixed = [r"kernel-(?:amd64|arm64)", r"initramfs-(?:amd64|arm64)\.xz",
             rf"cmdline-{platform_arch}", rf"{platform_arch}\.iso", rf"{platform_arch}-uki\.efi"]
    disk = rf"{platform_arch}\.(?:raw|qcow2|vhd|ova)(?:\.tar\.gz|\.gz|\.xz|\.zst)?"
    return any(re.fullmatch(p, path) for p in [*fixed, disk])


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture
def fake() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def factory(fake: FakeFactory, clock: ManualClock, tmp_path: Path) -> Iterator[ImageFactory]:
    client = httpx.Client(transport=fake.transport())
    with ImageFactory(BASE, client=client, cache_dir=tmp_path / "images", clock=clock) as f:
        yield f
    client.close()


def spec_with(extensions: Sequence[str] = (), kernel_args: Sequence[str] = (),
              version: str = "v1.13.9") -> ClusterSpec:
    talos = {"version": version, "imageFactory": BASE,
             "schematic": {"extensions": list(extensions), "extraKernelArgs": list(kernel_args)}}
    return parse_spec({"apiVersion": "drover/v1alpha1", "kind": "Cluster",
                       "metadata": {"name": "lab"},
                       "spec": {"talos": talos, "provider": {"kind": "lab"},
                                "kubernetes": {"version": "1.36.3",
                                               "endpoint": "https://10.5.0.2:6443"}}},
                      source="test")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- schematics -----------------------------------------------------------------------------

def test_fake_factory_reproduces_the_published_schematic_ids():
    assert sha(go_yaml({}).encode()) == VANILLA_ID
    body = {"customization": {"systemExtensions": {
        "officialExtensions": ["siderolabs/qemu-guest-agent"]}}}
    assert sha(go_yaml(body).encode()) == QEMU_AGENT_ID


def test_create_schematic_of_an_empty_schematic_returns_the_vanilla_id(factory, fake):
    assert factory.create_schematic(spec_with()) == VANILLA_ID
    (post,) = fake.requests
    assert post.method == "POST" and post.url == f"{BASE}/schematics"
    assert post.headers["Content-Type"] == "application/yaml"


def test_create_schematic_for_qemu_guest_agent_returns_the_published_id(factory, fake):
    schematic_id = factory.create_schematic(spec_with(["siderolabs/qemu-guest-agent"]))
    assert schematic_id == QEMU_AGENT_ID
    assert "siderolabs/qemu-guest-agent" in factory.schematic(schematic_id)


def test_create_schematic_with_kernel_args_matches_the_offline_derivation(factory, fake, caplog):
    spec = spec_with(["siderolabs/qemu-guest-agent"], ["console=ttyS0", "net.ifnames=0"])
    with caplog.at_level(logging.INFO, logger="drover.imagefactory"):
        schematic_id = factory.create_schematic(spec)
    assert fake.schematics[schematic_id].startswith("customization:\n    extraKernelArgs:\n")
    assert not caplog.records  # the prediction held: nothing to note


def test_the_factorys_schematic_id_wins_over_the_offline_one(factory, fake, caplog):
    fake.owner = "sre@example.com"  # an authenticated factory adds the owner to the body
    with caplog.at_level(logging.INFO, logger="drover.imagefactory"):
        schematic_id = factory.create_schematic(spec_with())
    assert schematic_id != VANILLA_ID and schematic_id in fake.schematics
    (note,) = caplog.records
    assert note.levelno == logging.INFO and VANILLA_ID in note.getMessage()


def test_create_schematic_accepts_an_answer_without_the_schematic_field(factory, fake):
    fake.legacy = True
    assert factory.create_schematic(spec_with()) == VANILLA_ID


def test_unknown_schematic_is_a_404_naming_the_url_and_is_not_retried(factory, fake):
    with pytest.raises(FactoryRefused) as caught:
        factory.schematic("0" * 64)
    assert caught.value.status == 404
    assert f"{BASE}/schematics/{'0' * 64}" in str(caught.value)
    assert "schematic not found" in str(caught.value)
    assert len(fake.requests) == 1


# --- versions and extensions ----------------------------------------------------------------

def test_versions_and_official_extensions(factory):
    assert factory.versions() == VERSIONS
    extensions = factory.official_extensions("v1.13.9")
    assert [e.name for e in extensions] == EXTENSIONS
    assert extensions[0].ref == "ghcr.io/siderolabs/qemu-guest-agent:fake"


def test_check_extensions_returns_the_factorys_entries_and_resolves_aliases(factory):
    spec = spec_with(["siderolabs/qemu-guest-agent", "siderolabs/v4l-uvc"])
    assert [e.name for e in factory.check_extensions(spec)] == [
        "siderolabs/qemu-guest-agent", "siderolabs/v4l-uvc-drivers"]


def test_check_extensions_skips_the_factory_when_the_spec_has_none(factory, fake):
    assert factory.check_extensions(spec_with()) == []
    assert fake.requests == []


def test_unknown_extension_names_the_missing_one_and_near_matches(factory):
    spec = spec_with(["siderolabs/qemu-guest-agnet", "iscsi-tools", "siderolabs/nope-nope"])
    with pytest.raises(UnknownExtension) as caught:
        factory.check_extensions(spec)
    error = caught.value
    assert error.missing == ["siderolabs/qemu-guest-agnet", "iscsi-tools", "siderolabs/nope-nope"]
    assert error.near["siderolabs/qemu-guest-agnet"] == ["siderolabs/qemu-guest-agent"]
    assert error.near["iscsi-tools"] == ["siderolabs/iscsi-tools"]
    assert error.near["siderolabs/nope-nope"] == []
    assert "v1.13.9" in str(error)
    assert "siderolabs/qemu-guest-agnet (did you mean siderolabs/qemu-guest-agent?)" in str(error)


def test_check_version_names_close_versions(factory):
    factory.check_version("v1.13.9")
    with pytest.raises(UnknownVersion, match=r"v1\.13\.10.*did you mean.*v1\.13\.9"):
        factory.check_version("v1.13.10")


# --- installer references and boot-media URLs -----------------------------------------------

@pytest.mark.parametrize(("version", "platform", "secureboot", "reference"), [
    ("v1.13.9", "metal", False, "factory.test/metal-installer/{id}:v1.13.9"),
    ("v1.13.9", "metal", True, "factory.test/metal-installer-secureboot/{id}:v1.13.9"),
    ("v1.13.9", "nocloud", False, "factory.test/nocloud-installer/{id}:v1.13.9"),
    ("v1.10.0", "aws", False, "factory.test/aws-installer/{id}:v1.10.0"),
    ("v1.10.0-beta.1", "metal", False, "factory.test/installer/{id}:v1.10.0-beta.1"),
    ("v1.9.6", "metal", False, "factory.test/installer/{id}:v1.9.6"),
    ("v1.9.6", "metal", True, "factory.test/installer-secureboot/{id}:v1.9.6"),
    ("latest", "metal", False, "factory.test/metal-installer/{id}:latest"),
])
def test_installer_reference_per_version(factory, version, platform, secureboot, reference):
    assert factory.installer_image(VANILLA_ID, version, platform, secureboot) == \
        reference.format(id=VANILLA_ID)


def test_installer_reference_agrees_with_the_rendered_machine_config():
    spec = spec_with(["siderolabs/qemu-guest-agent"])
    with httpx.Client(transport=FakeFactory().transport()) as client:
        factory = ImageFactory.for_spec(spec, client=client)
        assert factory.installer_image(QEMU_AGENT_ID, "v1.13.9") == render_installer_image(spec)


@pytest.mark.parametrize(("kwargs", "path"), [
    ({}, "metal-amd64.raw.zst"),
    ({"version": "v1.7.0"}, "metal-amd64.raw.xz"),
    ({"arch": "arm64"}, "metal-arm64.raw.zst"),
    ({"secureboot": True}, "metal-amd64-secureboot.raw.zst"),
    ({"platform": "nocloud"}, "nocloud-amd64.raw.xz"),
    ({"platform": "vmware"}, "vmware-amd64.ova"),
    ({"platform": "gcp"}, "gcp-amd64.raw.tar.gz"),
    ({"platform": "azure"}, "azure-amd64.vhd.xz"),
    ({"platform": "digital-ocean"}, "digital-ocean-amd64.raw.gz"),
    ({"platform": "oracle"}, "oracle-amd64.qcow2"),
    ({"suffix": "raw.xz"}, "metal-amd64.raw.xz"),
    ({"platform": "nocloud", "suffix": "qcow2"}, "nocloud-amd64.qcow2"),
])
def test_disk_image_url_uses_the_platform_default_suffix(factory, fake, kwargs, path):
    kwargs = dict(kwargs)  # parametrize shares the dict between runs
    version = kwargs.pop("version", "v1.13.9")
    url = factory.disk_image_url(VANILLA_ID, version, **kwargs)
    assert url == f"{BASE}/image/{VANILLA_ID}/{version}/{path}"
    assert valid_profile_path(path)


def test_iso_and_boot_asset_urls(factory):
    image = f"{BASE}/image/{VANILLA_ID}/v1.13.9"
    assert factory.iso_url(VANILLA_ID, "v1.13.9") == f"{image}/metal-amd64.iso"
    assert factory.iso_url(VANILLA_ID, "v1.13.9", "nocloud", "arm64", secureboot=True) == \
        f"{image}/nocloud-arm64-secureboot.iso"
    assert factory.boot_assets(VANILLA_ID, "v1.13.9") == BootAssets(
        kernel=f"{image}/kernel-amd64", initramfs=f"{image}/initramfs-amd64.xz",
        cmdline=f"{image}/cmdline-metal-amd64")
    assert factory.boot_assets(VANILLA_ID, "v1.13.9", arch="arm64", secureboot=True).cmdline \
        == f"{image}/cmdline-metal-arm64-secureboot"


def test_every_generated_boot_media_url_is_one_the_factory_serves(factory):
    urls = [factory.disk_image_url(VANILLA_ID, "v1.13.9"),
            factory.disk_image_url(VANILLA_ID, "v1.13.9", "vmware"),
            factory.iso_url(VANILLA_ID, "v1.13.9", secureboot=True),
            *vars(factory.boot_assets(VANILLA_ID, "v1.13.9")).values()]
    for url in urls:
        assert factory.download(url).stat().st_size == SIZE


def test_bad_arch_or_platform_without_a_default_disk_image_is_refused_offline(factory):
    with pytest.raises(ValueError, match="arch must be one of amd64, arm64"):
        factory.iso_url(VANILLA_ID, "v1.13.9", arch="x86_64")
    with pytest.raises(ValueError, match="no default disk image for platform 'vultr'"):
        factory.disk_image_url(VANILLA_ID, "v1.13.9", "vultr")


def test_invalid_profile_path_is_a_400_naming_the_url_and_the_message(factory, fake):
    url = factory.disk_image_url(VANILLA_ID, "v1.13.9", suffix="raw.bz2")
    with pytest.raises(FactoryRefused) as caught:
        factory.download(url)
    assert caught.value.status == 400
    assert url in str(caught.value) and 'invalid profile path: "metal-amd64.raw.bz2"' in \
        str(caught.value)
    assert len(fake.requests) == 1


def test_unknown_version_download_is_a_404_and_leaves_no_file(factory, fake, tmp_path):
    with pytest.raises(FactoryRefused, match="version v1.99.0 not found"):
        factory.download(factory.iso_url(VANILLA_ID, "v1.99.0"))
    assert len(fake.requests) == 1
    assert not [p for p in (tmp_path / "images").rglob("*") if p.suffix == ".iso"]


# --- downloads and the cache ----------------------------------------------------------------

def test_download_verifies_and_stores_the_checksum_beside_the_file(factory, fake, tmp_path):
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    data = fake.content(f"/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    progress: list[tuple[int, int | None]] = []
    path = factory.download(url, expected_sha256=sha(data),
                            on_progress=lambda done, total: progress.append((done, total)))
    assert path.read_bytes() == data
    assert path.name == "metal-amd64.iso"
    assert path.parent == tmp_path / "images" / sha(url.encode())
    assert path.with_name("metal-amd64.iso.sha256").read_text() == \
        f"{sha(data)}  metal-amd64.iso\n"
    assert progress[-1] == (SIZE, SIZE)
    assert not path.with_name("metal-amd64.iso.part").exists()


def test_cached_download_is_returned_without_a_request(factory, fake):
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    first = factory.download(url)
    requests = len(fake.requests)
    progress: list[tuple[int, int | None]] = []
    assert factory.download(url, on_progress=lambda *p: progress.append(p)) == first
    assert len(fake.requests) == requests
    assert progress == [(SIZE, SIZE)]


def test_a_cached_file_that_fails_its_checksum_is_downloaded_again(factory, fake):
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    path = factory.download(url)
    path.write_bytes(b"bit rot")
    assert factory.download(url).read_bytes() == fake.content(
        f"/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    assert len(fake.asset_requests()) == 2


def test_default_cache_is_under_drover_home(fake, isolated_home):
    with httpx.Client(transport=fake.transport()) as client:
        path = ImageFactory(BASE, client=client).download(
            f"{BASE}/image/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    assert path.is_relative_to(isolated_home / "cache" / "images")


def test_checksum_mismatch_raises_and_caches_nothing(factory, fake):
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    with pytest.raises(ChecksumMismatch, match="expected " + "a" * 64):
        factory.download(url, expected_sha256="a" * 64)
    entry = factory.cache_dir / sha(url.encode())
    assert sorted(p.name for p in entry.iterdir()) == [".lock"]
    assert len(fake.asset_requests()) == 1  # a mismatch is not transient


def test_a_dropped_connection_resumes_with_range_and_ends_complete(factory, fake, clock):
    fake.drops = 1
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    data = fake.content(f"/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    progress: list[tuple[int, int | None]] = []
    path = factory.download(url, expected_sha256=sha(data),
                            on_progress=lambda *p: progress.append(p))
    first, second = fake.asset_requests()
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={fake.cut}-"
    assert path.read_bytes() == data
    assert progress[-1] == (SIZE, SIZE) and (fake.cut, SIZE) in progress
    assert clock.now() > 1000.0  # it backed off on the clock, not by sleeping


def test_a_server_ignoring_range_restarts_the_file_from_zero(factory, fake):
    fake.drops, fake.ranges = 1, False
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    data = fake.content(f"/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    assert factory.download(url, expected_sha256=sha(data)).read_bytes() == data
    assert fake.asset_requests()[1].headers["Range"] == f"bytes={fake.cut}-"


def test_download_follows_the_redirect_to_the_cdn_and_resumes_there(factory, fake):
    fake.redirect, fake.drops = True, 1
    url = factory.disk_image_url(VANILLA_ID, "v1.13.9", "nocloud")
    data = fake.content(f"/{VANILLA_ID}/v1.13.9/nocloud-amd64.raw.xz")
    assert factory.download(url, expected_sha256=sha(data)).read_bytes() == data
    hosts = [(r.url.host, r.headers.get("Range")) for r in fake.asset_requests()]
    assert hosts == [("factory.test", None), ("cdn.test", None),
                     ("factory.test", f"bytes={fake.cut}-"), ("cdn.test", f"bytes={fake.cut}-")]


def test_an_interrupted_download_is_never_cached_and_resumes_next_time(factory, fake):
    fake.drops, fake.cut = 5, 10_000  # every attempt of the first call breaks
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    with pytest.raises(RetriesExhausted):
        factory.download(url)
    entry = factory.cache_dir / sha(url.encode())
    assert not (entry / "metal-amd64.iso").exists()
    assert (entry / "metal-amd64.iso.part").stat().st_size == 5 * fake.cut
    data = fake.content(f"/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    assert factory.download(url, expected_sha256=sha(data)).read_bytes() == data
    assert fake.asset_requests()[-1].headers["Range"] == f"bytes={5 * fake.cut}-"


def test_a_stale_partial_of_other_content_is_restarted_once(factory, fake):
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    entry = factory.cache_dir / sha(url.encode())
    entry.mkdir(parents=True)
    (entry / "metal-amd64.iso.part").write_bytes(b"x" * 1000)  # left by another build
    data = fake.content(f"/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    assert factory.download(url, expected_sha256=sha(data)).read_bytes() == data
    assert [r.headers.get("Range") for r in fake.asset_requests()] == ["bytes=1000-", None]


def test_a_complete_partial_left_by_a_crash_is_verified_not_fetched_again(factory, fake):
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    data = fake.content(f"/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    entry = factory.cache_dir / sha(url.encode())
    entry.mkdir(parents=True)
    (entry / "metal-amd64.iso.part").write_bytes(data)  # crashed before the rename
    assert factory.download(url, expected_sha256=sha(data)).read_bytes() == data
    (only,) = fake.asset_requests()
    assert only.headers["Range"] == f"bytes={SIZE}-"  # answered 416 */SIZE: nothing to fetch


def test_an_over_long_partial_is_discarded_and_fetched_whole(factory, fake):
    url = factory.iso_url(VANILLA_ID, "v1.13.9")
    data = fake.content(f"/{VANILLA_ID}/v1.13.9/metal-amd64.iso")
    entry = factory.cache_dir / sha(url.encode())
    entry.mkdir(parents=True)
    (entry / "metal-amd64.iso.part").write_bytes(data + b"junk")
    assert factory.download(url, expected_sha256=sha(data)).read_bytes() == data
    assert [r.headers.get("Range") for r in fake.asset_requests()] == [f"bytes={SIZE + 4}-", None]


# --- transient faults, retries and timeouts -------------------------------------------------

def test_transient_500_is_retried_then_succeeds(factory, fake, clock):
    fake.fail_5xx = 2
    assert factory.versions() == VERSIONS
    assert len(fake.requests) == 3
    assert clock.now() > 1000.0


def test_a_timeout_is_transient_and_retried(factory, fake):
    fake.time_out = 1
    assert factory.create_schematic(spec_with()) == VANILLA_ID
    assert [r.method for r in fake.requests] == ["POST", "POST"]


def test_a_factory_that_keeps_failing_ends_in_retries_exhausted(factory, fake):
    fake.fail_5xx = 100
    with pytest.raises(RetriesExhausted, match=f"GET {BASE}/versions: HTTP 500: internal error"):
        factory.versions()
    assert len(fake.requests) == 5


def test_404_is_not_retried(factory, fake):
    with pytest.raises(FactoryRefused, match="version v1.99.0 not found"):
        factory.official_extensions("v1.99.0")
    assert len(fake.requests) == 1


def test_every_request_carries_timeouts_even_on_a_client_without_them(fake, tmp_path):
    fake.redirect = True
    with httpx.Client(transport=fake.transport(), timeout=None) as client:
        factory = ImageFactory(BASE, client=client, cache_dir=tmp_path, clock=ManualClock())
        factory.create_schematic(spec_with())
        factory.versions()
        factory.download(factory.iso_url(VANILLA_ID, "v1.13.9"))
    assert len(fake.requests) == 4
    for request in fake.requests:
        timeout = request.extensions["timeout"]
        assert all(isinstance(timeout[k], float) for k in ("connect", "read", "write", "pool")), \
            (request.url, timeout)


def test_the_owned_client_has_timeouts_too():
    factory = ImageFactory(BASE)
    try:
        assert factory._client.timeout.connect is not None
        assert factory._client.timeout.read is not None
    finally:
        factory.close()


def test_fake_answers_are_json_where_the_api_says_so(fake):
    with httpx.Client(transport=fake.transport()) as client:
        answer = client.post(f"{BASE}/schematics", content=b"customization: {}\n")
    assert answer.status_code == 201
    assert json.loads(answer.text) == {"id": VANILLA_ID, "schematic": "customization: {}\n"}


# ---- which URLs the client may reach ---------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://factory.talos.dev", "https://factory.example:8443/base/", "http://127.0.0.1:8080",
    "http://localhost:8080", "http://[::1]:8080",
])
def test_https_or_loopback_http_base_urls_are_accepted(url):
    ImageFactory(url, client=httpx.Client(transport=httpx.MockTransport(lambda r: None))).close()


@pytest.mark.parametrize(("url", "problem"), [
    ("file:///etc/passwd", "is not a URL with a host"),
    ("http://factory.talos.dev", "is plain http; use https://"),
    ("http://10.0.0.1:8080", "is plain http"),
    ("ftp://factory.talos.dev", "has scheme 'ftp'"),
    ("factory.talos.dev", "is not a URL with a host"),
    ("https://factory.test:99999", "is not a URL with a host"),
    ("https://factory.test/?x=1", "has a query or fragment"),
])
def test_unsafe_base_urls_are_refused_before_any_request(url, problem):
    sent: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(sent.append))

    with pytest.raises(UnsafeFactoryURL, match=rf"spec.talos.imageFactory: .* {problem}"):
        ImageFactory(url, client=client)

    assert sent == []


def test_credentials_in_the_url_are_refused_and_never_echoed():
    with pytest.raises(UnsafeFactoryURL, match="carries credentials") as err:
        ImageFactory("https://admin:hunter2@factory.test")

    assert "hunter2" not in str(err.value) and "https://***@factory.test" in str(err.value)


def test_a_download_url_that_is_not_https_is_refused_before_any_request(factory, fake):
    with pytest.raises(UnsafeFactoryURL, match="download URL: http://cdn.example/x.iso is plain"):
        factory.download("http://cdn.example/x.iso")

    assert fake.requests == []


def test_a_redirect_to_plain_http_is_refused_before_the_body_is_kept(tmp_path, clock):
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "factory.test":
            return httpx.Response(302, headers={"Location": "http://cdn.example/x.iso"})
        return httpx.Response(200, content=b"evil bytes")

    client = httpx.Client(transport=httpx.MockTransport(handle))
    factory = ImageFactory(BASE, client=client, cache_dir=tmp_path, clock=clock)

    with pytest.raises(UnsafeFactoryURL, match="redirected to: http://cdn.example/x.iso"):
        factory.download(f"{BASE}/image/x/v1.13.9/x.iso")

    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [".lock"]
