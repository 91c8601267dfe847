"""The Image Factory's errors and the HTTP plumbing of its client: an answer's status as an
error (4xx refused, 5xx/timeouts transient), Range arithmetic for resumed downloads, file
checksums, and a lock so two tasks never fetch the same file at once."""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from drover.errors import DroverError, TransientError

CHUNK = 1 << 20


class ImageFactoryError(DroverError):
    """The Image Factory could not give what was asked (base of this module's errors)."""


class FactoryRefused(ImageFactoryError):
    """The factory answered 4xx: names the request, the status and the factory's message."""

    def __init__(self, method: str, url: str, status: int, message: str) -> None:
        self.url, self.status, self.message = url, status, message
        super().__init__(f"{method} {url}: HTTP {status}: {message}")


class UnknownExtension(ImageFactoryError, LookupError):
    """The spec names an official extension the factory does not offer for its Talos version."""

    def __init__(self, version: str, near: dict[str, list[str]]) -> None:
        self.version, self.missing, self.near = version, list(near), near
        lines = [f"  {name}" + (f" (did you mean {', '.join(similar)}?)" if similar else "")
                 for name, similar in near.items()]
        super().__init__(f"Talos {version} has no official extension named:\n" + "\n".join(lines))


class UnknownVersion(ImageFactoryError, LookupError):
    """The factory offers no images for this Talos version."""


class ChecksumMismatch(ImageFactoryError, ValueError):
    """A downloaded file's sha256 is not the one expected; nothing was cached."""


def _request_error(method: str, url: str, exc: httpx.RequestError) -> DroverError:
    transient = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
    kind = TransientError if isinstance(exc, transient) else ImageFactoryError
    return kind(f"{method} {url}: {type(exc).__name__}: {exc}")


def _raise_for_status(method: str, url: str, response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    message = response.text.strip()[:500] or response.reason_phrase
    via = f" (via {response.url})" if str(response.url) != url else ""
    if status >= 500 or status in (408, 429):
        raise TransientError(f"{method} {url}{via}: HTTP {status}: {message}")
    raise FactoryRefused(method, url + via, status, message)


def _range_start(response: httpx.Response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match[1]) if match else None


def _total_length(response: httpx.Response, offset: int) -> int | None:
    match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))  # bytes a-b/N, */N
    if match:
        return int(match[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _sha256(path: Path) -> hashlib._Hash:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(block)
    return hasher


def _verified(target: Path, sums: Path, expected: str | None) -> bool:
    """Whether `target` is complete: its checksum file exists and its content matches it."""
    if not (target.is_file() and sums.is_file()):
        return False
    recorded = (sums.read_text().split() or [""])[0]
    if expected and recorded != expected:
        return False
    return _sha256(target).hexdigest() == recorded


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two tasks fetching the same URL: the second waits, then finds it cached."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
