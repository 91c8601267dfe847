"""The Image Factory's errors and the HTTP plumbing of its client: which URLs it may reach
(https, or http to a loopback host; no credentials), an answer's status as an error (4xx
refused, 5xx/timeouts transient), Range arithmetic for resumed downloads, file checksums,
and a lock so two tasks never fetch the same file at once."""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

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


class UnsafeFactoryURL(ImageFactoryError, ValueError):
    """A URL the client will not use: not https (http only to a loopback host, for tests),
    credentials in it, or no host; refused before any request."""


def check_url(url: str, field: str = "spec.talos.imageFactory", base: bool = True) -> str:
    """`url` if the factory client may send a request to it, else UnsafeFactoryURL naming
    `field`; a base URL may carry no query or fragment. Credentials are never echoed."""
    parts = _split(url)
    if parts is None or not parts.hostname:
        problem = "is not a URL with a host"
    elif "@" in parts.netloc:
        problem = "carries credentials (user@); the factory is public: remove them"
    elif parts.scheme == "http" and not _loopback(parts.hostname):
        problem = "is plain http; use https:// (http is allowed only to a loopback host)"
    elif parts.scheme not in ("https", "http"):
        problem = f"has scheme {parts.scheme or 'none'!r}; the factory is reached over https://"
    elif base and (parts.query or parts.fragment):
        problem = "has a query or fragment; give the factory's base URL only"
    else:
        return url
    raise UnsafeFactoryURL(f"{field}: {_shown(url)} {problem}")


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError when the port is not a number 0-65535)
    except ValueError:
        return None
    return parts


def _shown(url: str) -> str:
    """`url` with any user:password@ replaced by ***@, for messages."""
    return re.sub(r"(//)[^/@]*@", r"\1***@", url)


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
