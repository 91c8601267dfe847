"""The Talos Image Factory client: schematics, versions, extensions, boot media and their cache.

It turns a spec's schematic into the factory's id (POST /schematics; the offline derivation in
drover.machineconfig.render is only a prediction), checks that the spec's extensions exist for
its Talos version, names installer images and boot-media URLs the way the factory serves them,
and downloads media into $DROVER_HOME/cache/images: one folder per URL (sha256 of the URL), the
file's sha256 beside it, resumed with Range after a drop and renamed into place only once
verified. It refuses a base URL, a download URL or a redirect that is not https (http only to a
loopback host), or that carries credentials, before sending anything there. 4xx answers raise
FactoryRefused; 5xx, timeouts and dropped connections are TransientError, retried here by
drover.retry.api_call on the injected clock.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from drover.errors import TransientError
from drover.files import write_private
from drover.home import drover_home
from drover.imagefactory_http import (  # noqa: F401 (re-exported: callers catch these here)
    ChecksumMismatch,
    FactoryRefused,
    ImageFactoryError,
    UnknownExtension,
    UnknownVersion,
    UnsafeFactoryURL,
    _locked,
    _raise_for_status,
    _range_start,
    _request_error,
    _sha256,
    _total_length,
    _verified,
    check_url,
)
from drover.lab.clock import Clock, SystemClock
from drover.machineconfig.render import schematic_id, schematic_yaml
from drover.retry import api_call, call
from drover.spec import ClusterSpec

log = logging.getLogger(__name__)

#: API calls answer in seconds; a boot asset is built on demand before its first byte arrives.
API_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=600.0)
ARCHES = ("amd64", "arm64")
#: talos pkg/machinery/platforms DiskImageSuffix; metal was raw.xz before v1.8.0.
DISK_SUFFIX = {
    "metal": "raw.zst", "nocloud": "raw.xz", "aws": "raw.xz", "gcp": "raw.tar.gz",
    "azure": "vhd.xz", "digital-ocean": "raw.gz", "openstack": "raw.xz", "vmware": "ova",
    "hcloud": "raw.xz", "oracle": "qcow2", "exoscale": "qcow2", "opennebula": "raw.zst",
    "scaleway": "raw.zst", "akamai": "raw.gz", "cloudstack": "raw.gz", "upcloud": "raw.xz",
}
#: Names the factory resolves to another (image-factory internal/profile extensionNameAlias).
EXTENSION_ALIASES = {
    "siderolabs/v4l-uvc": "siderolabs/v4l-uvc-drivers",
    "siderolabs/usb-modem": "siderolabs/usb-modem-drivers",
    "siderolabs/gasket": "siderolabs/gasket-driver",
    "siderolabs/talos-vmtoolsd": "siderolabs/vmtoolsd-guest-agent",
    "siderolabs/xe-guest-utilities": "siderolabs/xen-guest-agent",
}
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class Extension:
    name: str
    ref: str
    digest: str
    author: str = ""
    description: str = ""


@dataclass(frozen=True)
class BootAssets:
    """What a PXE or direct-kernel boot needs."""

    kernel: str
    initramfs: str
    cmdline: str


def at_least(version: str, minimum: tuple[int, int, int]) -> bool:
    """Semver `version >= minimum`; a pre-release of `minimum` is below it. An unparsable
    version (`latest`) counts as the newest, as the factory's quirks assume."""
    match = _SEMVER.match(version)
    if not match:
        return True
    core = (int(match[1]), int(match[2]), int(match[3]))
    return core > minimum or (core == minimum and match[4] is None)


class ImageFactory:
    """A client of one Image Factory; pass `client` (e.g. with a MockTransport) to test it."""

    def __init__(self, base_url: str, client: httpx.Client | None = None,
                 cache_dir: Path | None = None, clock: Clock | None = None) -> None:
        self.base_url = check_url(base_url).rstrip("/")  # before any request is made
        self.host = urlparse(self.base_url).netloc
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=API_TIMEOUT)
        self._cache_dir = cache_dir
        self._clock = clock or SystemClock()

    @classmethod
    def for_spec(cls, spec: ClusterSpec, **kwargs: Any) -> ImageFactory:
        return cls(spec.spec.talos.image_factory, **kwargs)

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir or drover_home() / "cache" / "images"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> ImageFactory:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- API ------------------------------------------------------------------------------

    def create_schematic(self, spec: ClusterSpec) -> str:
        """Upload the spec's schematic and return the factory's id for it.

        Retrying is safe: schematics are content-addressed, so a second upload is a no-op.
        """
        response = self._api("POST", "/schematics", content=schematic_yaml(spec).encode(),
                             headers={"Content-Type": "application/yaml"})
        factory_id = str(response.json()["id"])
        predicted = schematic_id(spec)
        if factory_id != predicted:
            log.info("%s: the factory's schematic id %s differs from the offline derivation %s; "
                     "using the factory's", self.host, factory_id, predicted)
        return factory_id

    def schematic(self, schematic_id: str) -> str:
        """The schematic's canonical YAML, as stored by the factory."""
        return self._api("GET", f"/schematics/{schematic_id}").text

    def versions(self) -> list[str]:
        return [str(v) for v in self._api("GET", "/versions").json()]

    def official_extensions(self, version: str) -> list[Extension]:
        items = self._api("GET", f"/version/{version}/extensions/official").json()
        return [Extension(**{k: str(item.get(k, "")) for k in Extension.__dataclass_fields__})
                for item in items]

    def check_version(self, version: str) -> None:
        """Raise UnknownVersion, naming close versions, unless the factory offers `version`."""
        known = self.versions()
        if version not in known:
            near = difflib.get_close_matches(version, known, n=3, cutoff=0.75)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise UnknownVersion(f"{self.host} offers no Talos {version}{hint}")

    def check_extensions(self, spec: ClusterSpec) -> list[Extension]:
        """The spec's extensions as the factory lists them for its Talos version, or raise
        UnknownExtension naming every missing one with its nearest names."""
        wanted = spec.spec.talos.schematic.extensions
        if not wanted:
            return []
        version = spec.spec.talos.version
        offered = {e.name: e for e in self.official_extensions(version)}
        found = {n: offered.get(n) or offered.get(EXTENSION_ALIASES.get(n, "")) for n in wanted}
        missing = {n: _near(n, list(offered)) for n, ext in found.items() if ext is None}
        if missing:
            raise UnknownExtension(version, missing)
        return [ext for ext in found.values() if ext is not None]

    # --- references and URLs ----------------------------------------------------------------

    def installer_image(self, schematic_id: str, version: str, platform: str = "metal",
                        secureboot: bool = False) -> str:
        """`<host>/<platform>-installer[-secureboot]/<id>:<version>`; the legacy
        `<host>/installer[-secureboot]/…` before Talos v1.10.0 (the factory's unified installer)."""
        suffix = "-secureboot" if secureboot else ""
        repo = f"{platform}-installer" if at_least(version, (1, 10, 0)) else "installer"
        return f"{self.host}/{repo}{suffix}/{schematic_id}:{version}"

    def image_url(self, schematic_id: str, version: str, path: str) -> str:
        return f"{self.base_url}/image/{schematic_id}/{version}/{path}"

    def disk_image_url(self, schematic_id: str, version: str, platform: str = "metal",
                       arch: str = "amd64", secureboot: bool = False,
                       suffix: str | None = None) -> str:
        """`<platform>-<arch>[-secureboot].<suffix>`, suffix defaulting to the platform's own."""
        if suffix is None:
            if platform not in DISK_SUFFIX:
                raise ValueError(f"no default disk image for platform {platform!r} (known: "
                                 f"{', '.join(sorted(DISK_SUFFIX))}); pass suffix=")
            suffix = DISK_SUFFIX[platform]
            if platform == "metal" and not at_least(version, (1, 8, 0)):
                suffix = "raw.xz"
        return self.image_url(schematic_id, version,
                              f"{_platform_arch(platform, arch, secureboot)}.{suffix}")

    def iso_url(self, schematic_id: str, version: str, platform: str = "metal",
                arch: str = "amd64", secureboot: bool = False) -> str:
        return self.image_url(schematic_id, version,
                              f"{_platform_arch(platform, arch, secureboot)}.iso")

    def boot_assets(self, schematic_id: str, version: str, platform: str = "metal",
                    arch: str = "amd64", secureboot: bool = False) -> BootAssets:
        """Kernel, initramfs (with the extensions) and the kernel command line."""
        _check_arch(arch)
        return BootAssets(
            kernel=self.image_url(schematic_id, version, f"kernel-{arch}"),
            initramfs=self.image_url(schematic_id, version, f"initramfs-{arch}.xz"),
            cmdline=self.image_url(schematic_id, version,
                                   f"cmdline-{_platform_arch(platform, arch, secureboot)}"))

    # --- downloads --------------------------------------------------------------------------

    def download(self, url: str, expected_sha256: str | None = None,
                 on_progress: Callable[[int, int | None], None] | None = None) -> Path:
        """The file at `url`, from the cache when its recorded sha256 still verifies.

        Otherwise it is fetched into `<name>.part` (resumed with Range after a drop, restarted
        on a 200), verified, and renamed into place after its checksum file is written, so a
        crash never leaves a half file that looks cached.
        """
        check_url(url, "download URL", base=False)
        entry = self.cache_dir / hashlib.sha256(url.encode()).hexdigest()
        entry.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = PurePosixPath(unquote(urlparse(url).path)).name or "download"
        target, sums, part = entry / name, entry / f"{name}.sha256", entry / f"{name}.part"
        expected = expected_sha256.lower() if expected_sha256 else None
        with _locked(entry / ".lock"):
            if _verified(target, sums, expected):
                log.debug("%s: cache hit for %s", self.host, url)
                if on_progress:
                    size = target.stat().st_size
                    on_progress(size, size)
                return target
            target.unlink(missing_ok=True)
            sums.unlink(missing_ok=True)
            stale_part = part.exists()
            digest = call(api_call(self._clock), self._fetch, url, part, on_progress)
            if expected and digest != expected and stale_part:
                # The partial came from an earlier run, maybe of another build: start over once.
                part.unlink(missing_ok=True)
                digest = call(api_call(self._clock), self._fetch, url, part, on_progress)
            if expected and digest != expected:
                part.unlink(missing_ok=True)
                raise ChecksumMismatch(f"{url}: sha256 is {digest}, expected {expected}")
            write_private(sums, f"{digest}  {name}\n")
            os.replace(part, target)
            return target

    def _fetch(self, url: str, part: Path,
               on_progress: Callable[[int, int | None], None] | None) -> str:
        """One attempt: continue `part` from its size; return the sha256 of the whole file."""
        offset = part.stat().st_size if part.exists() else 0
        # identity: Range offsets and the checksum are about the bytes as stored.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with self._client.stream("GET", url, headers=headers, timeout=DOWNLOAD_TIMEOUT,
                                     follow_redirects=True) as response:
                check_url(str(response.url), f"GET {url}: redirected to", base=False)
                if response.status_code == 416 and offset:
                    if _total_length(response, 0) == offset:  # complete; crashed before rename
                        return _sha256(part).hexdigest()
                    part.unlink()
                    raise TransientError(f"GET {url}: range {offset}- not satisfiable; restarting")
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status("GET", url, response)
                resumed = response.status_code == 206
                if resumed and _range_start(response) != offset:
                    part.unlink()
                    raise TransientError(f"GET {url}: answered another range; restarting")
                done = offset if resumed else 0
                total = _total_length(response, done)
                hasher = _sha256(part) if resumed else hashlib.sha256()
                with open(part, "ab" if resumed else "wb") as out:
                    for chunk in response.iter_raw():  # as they arrive: a drop keeps them
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        if on_progress:
                            on_progress(done, total)
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.RequestError as exc:
            raise _request_error("GET", url, exc) from exc
        if total is not None and done != total:
            raise TransientError(f"GET {url}: body ended after {done} of {total} bytes")
        return hasher.hexdigest()

    # --- plumbing ---------------------------------------------------------------------------

    def _api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return call(api_call(self._clock), self._send, method, self.base_url + path, **kwargs)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, url, timeout=API_TIMEOUT,
                                            follow_redirects=True, **kwargs)
        except httpx.RequestError as exc:
            raise _request_error(method, url, exc) from exc
        check_url(str(response.url), f"{method} {url}: redirected to", base=False)
        _raise_for_status(method, url, response)
        return response


def _platform_arch(platform: str, arch: str, secureboot: bool) -> str:
    _check_arch(arch)
    return f"{platform}-{arch}" + ("-secureboot" if secureboot else "")


def _check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, got {arch!r}")


def _near(name: str, offered: list[str]) -> list[str]:
    """Offered names whose part after the namespace is close to `name`'s: comparing whole names
    would find every `siderolabs/…` close to every other."""
    short = {n.rpartition("/")[2]: n for n in offered}
    close = difflib.get_close_matches(name.rpartition("/")[2], list(short), n=3, cutoff=0.6)
    return [short[s] for s in close]


