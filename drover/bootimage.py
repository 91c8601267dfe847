"""Boot files drover puts on hypervisors, checked by sha256 before they leave this machine: a
local file against the digest pinned in the spec; an Image Factory download against its pin
or, when unpinned, against the digest recorded the first time drover downloaded that URL
(trust on first use, kept in $DROVER_HOME/trust/boot-images.json, 0600), so a later download
with other bytes is refused rather than booted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from drover.errors import DroverError, StateError
from drover.files import write_private
from drover.home import drover_home
from drover.imagefactory import ChecksumMismatch, ImageFactory
from drover.imagefactory_http import _locked
from drover.statefile import check_private, private_dir

log = logging.getLogger(__name__)

_files_lock = threading.Lock()
_verified_files: dict[tuple[str, int, int, str | None], str] = {}   # (path, size, mtime) -> sha


class BootImageMismatch(DroverError, ValueError):
    """A boot file's sha256 is not the pinned one, or not the one trusted on first use."""


def file_sha256(path: Path) -> str:
    """The sha256 of the file at `path`, read in blocks (boot images are large)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise BootImageMismatch(f"{path}: cannot be read: {exc.strerror}") from None


def verify_file(path: Path, expected: str | None, field: str) -> str:
    """The file's sha256, checked against `expected` (pinned by `field`) when given."""
    digest = file_sha256(path)
    if expected and digest != expected.lower():
        raise BootImageMismatch(f"{path}: sha256 is {digest}, but {field} pins {expected}; "
                                "nothing was uploaded. Use the file that was pinned, or pin "
                                "this one after checking where it came from")
    return digest


def verified_file(path: Path, pin: str | None, field: str) -> tuple[Path, str]:
    """(path, sha256) checked against `pin`; hashed once per process while unchanged."""
    try:
        info = path.stat()
        key = (str(path), info.st_size, info.st_mtime_ns, pin)
    except OSError:
        key = None  # verify_file says what is wrong with it
    with _files_lock:
        known = _verified_files.get(key) if key else None
    if known is None:
        known = verify_file(path, pin, field)
        if key:
            with _files_lock:
                _verified_files[key] = known
    return path, known


def fetch_boot_image(factory: ImageFactory, url: str, expected: str | None,
                     field: str = "spec.provider.bootImageSha256",
                     record: Path | None = None) -> tuple[Path, str]:
    """Download `url` (or take it from the cache) and return (path, sha256): checked against
    `expected` when pinned, else trusted on first use through `record`."""
    try:
        path = factory.download(url, expected_sha256=expected)
    except ChecksumMismatch as exc:
        raise BootImageMismatch(f"{exc} (pinned by {field}); nothing was kept") from None
    digest = file_sha256(path)
    if expected is None:
        trust_on_first_use(url, digest, field, record)
    elif digest != expected.lower():  # changed in the cache after download verified it
        raise BootImageMismatch(f"{path}: sha256 is {digest}, but {field} pins {expected}")
    return path, digest


def trust_record() -> Path:
    return drover_home() / "trust" / "boot-images.json"


def trust_on_first_use(url: str, digest: str, field: str, record: Path | None = None) -> None:
    """Record `digest` for `url` the first time; refuse a later different one."""
    record = record or trust_record()
    private_dir(record.parent)
    with _locked(record.parent / ".lock"):
        known = _read(record)
        entry = known.get(url)
        if entry is None:
            known[url] = {"sha256": digest, "first_seen": datetime.now(UTC).isoformat()}
            write_private(record, json.dumps(known, indent=2, sort_keys=True) + "\n")
            log.warning("boot image %s: no sha256 pinned, so trusting it on first use: recorded "
                        "sha256 %s in %s; later downloads must match it. Pin it with %s to "
                        "check it from the start", url, digest, record, field)
            return
    if entry["sha256"] != digest:
        raise BootImageMismatch(
            f"boot image {url}: sha256 is {digest}, but drover recorded {entry['sha256']} when it "
            f"first downloaded it ({entry.get('first_seen', 'date unknown')}; trust on first "
            f"use, {record}). The same URL now serves other bytes, so it is not booted. If the "
            f"change is expected, check the new digest out of band and pin it with {field}, "
            f"or remove this URL's entry from {record}")


def _read(record: Path) -> dict[str, dict[str, str]]:
    if not record.exists():
        return {}
    check_private(record)
    try:
        known = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        known = None
    if isinstance(known, dict) and all(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            for entry in known.values()):
        return known
    raise StateError(f"{record}: damaged (not drover's record of trusted boot images); move it "
                     "aside: the next download of each image is then trusted anew, or pin each "
                     "image's sha256 in the spec instead")
