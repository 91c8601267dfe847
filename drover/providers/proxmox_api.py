"""The Proxmox VE HTTP API as drover uses it: the token (from a Secret block or the
environment) and its header (TLS always verified), one call with its errors sorted into
transient and refused, task UPIDs waited on until they stop with an OK exit status, and
the shapes of VMs and agent answers."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from drover import retry, secretstore
from drover.errors import ProviderError, TransientError
from drover.lab.clock import Clock
from drover.provider_settings import ProxmoxProvider as ProxmoxSettings
from drover.secretstore import SecretUnavailable

log = logging.getLogger("drover.providers.proxmox")

_LOCKED = re.compile(r"can't lock file|is locked \(", re.I)  # another task holds the VM's lock
_MISSING = re.compile(r"does not exist", re.I)
TAKEN = re.compile(r"already exists", re.I)
_INSTALLER = re.compile(r"^(?P<host>[^/]+)/(?:[a-z0-9]+-)?installer(?P<sb>-secureboot)?/"
                        r"(?P<id>[0-9a-f]{64}):(?P<version>v[0-9A-Za-z.+-]+)$")
SIZE = re.compile(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)")
MAC = re.compile(r"=((?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})")
GIB = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024 ** 3}


class Missing(ProviderError):
    """Proxmox says the object does not exist (it answers 500, not 404)."""


class _TokenAuth(httpx.Auth):
    """`Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`; its repr hides the secret."""

    def __init__(self, token_id: str, secret: str) -> None:
        self.token_id, self._secret = token_id, secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"PVEAPIToken={self.token_id}={self._secret}"
        yield request

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***")

    def __repr__(self) -> str:
        return f"_TokenAuth({self.token_id!r}, secret=***)"


def token_secret_of(settings: ProxmoxSettings) -> str:
    """The token secret: from the Secret block the settings name (drover.secretstore), else
    from their environment variable; neither is a ProviderError saying where to put it."""
    if settings.token_secret_block:
        try:
            return secretstore.resolve(settings.token_secret_block,
                                       "spec.provider.tokenSecretBlock")
        except SecretUnavailable as exc:
            raise ProviderError(f"Proxmox API token {settings.token_id}: {exc}") from None
    secret = os.environ.get(settings.token_secret_env, "")
    if not secret:
        raise ProviderError(f"Proxmox API token {settings.token_id}: no secret; the "
                            f"environment variable {settings.token_secret_env} is not set "
                            "(or name a Prefect Secret block in spec.provider.tokenSecretBlock)")
    return secret


@dataclass
class _Endpoint:
    """What every provider on one Proxmox API shares in this process (each task opens its own)."""

    clones: threading.BoundedSemaphore
    lock: threading.Lock = field(default_factory=threading.Lock)
    reserved: set[int] = field(default_factory=set)  # VMIDs handed to creates still in flight


_ENDPOINTS: dict[tuple[str, int], _Endpoint] = {}
_ENDPOINTS_LOCK = threading.Lock()


def shared_endpoint(settings: ProxmoxSettings) -> _Endpoint:
    key = (settings.url.rstrip("/"), settings.max_parallel_clones)
    with _ENDPOINTS_LOCK:
        if key not in _ENDPOINTS:
            _ENDPOINTS[key] = _Endpoint(threading.BoundedSemaphore(settings.max_parallel_clones))
        return _ENDPOINTS[key]


@dataclass(frozen=True)
class VM:
    vmid: int
    node: str
    name: str
    status: str
    tags: frozenset[str]
    template: bool = False

    @property
    def path(self) -> str:
        return f"/nodes/{self.node}/qemu/{self.vmid}"

    @classmethod
    def parse(cls, row: dict[str, Any]) -> VM:
        tags = frozenset(t for t in re.split(r"[;,\s]+", str(row.get("tags") or "")) if t)
        return cls(int(row["vmid"]), str(row.get("node", "")), str(row.get("name", "")),
                   str(row.get("status", "unknown")), tags, bool(row.get("template")))


def _client(ca_file: str | None) -> httpx.Client:
    try:  # certificates and host names are always verified; ca_file only adds a private CA
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ProviderError(f"spec.provider.caFile: cannot load {ca_file!r}: {exc}") from None
    return httpx.Client(verify=context, timeout=httpx.Timeout(30.0, connect=10.0))


def _message(resp: httpx.Response) -> str:
    """Proxmox puts the reason in the status line; newer versions also in `message`/`errors`."""
    parts = [resp.reason_phrase]
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if body.get("message"):
            parts = [str(body["message"])]
        if isinstance(body.get("errors"), dict):
            parts += [f"{k}: {v}" for k, v in body["errors"].items()]
    return "; ".join(p.strip() for p in parts if p and p.strip()) or "no message"


def boot_iso(image: str) -> tuple[str, str]:
    """The Image Factory's metal ISO for an installer image: (URL, file name on the storage)."""
    m = _INSTALLER.match(image)
    if m is None:
        raise ProviderError(f"cannot derive a Talos boot ISO from the installer image {image!r} "
                            "(expected <factory>/<platform>-installer/<schematic>:<version>); "
                            "use an Image Factory installer, or set spec.provider.templateVmid")
    iso = f"metal-amd64{m['sb'] or ''}.iso"
    return (f"https://{m['host']}/image/{m['id']}/{m['version']}/{iso}",
            f"talos-{m['id'][:12]}-{m['version']}-{iso}")


def pick_address(answer: Any, mac: str, skip: set[str]) -> str:
    """The first usable address of the VM's NIC (IPv4 first), from network-get-interfaces."""
    interfaces = answer.get("result") if isinstance(answer, dict) else None
    interfaces = [i for i in interfaces or [] if isinstance(i, dict)]
    own = [i for i in interfaces if str(i.get("hardware-address", "")).lower() == mac.lower()]
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for iface in own if mac and own else interfaces:  # its own NIC, not cni0 or kube-ipvs0
        for entry in iface.get("ip-addresses") or []:
            try:
                ip = ipaddress.ip_address(str(entry.get("ip-address", "")).split("%")[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified
                    or ip.is_multicast or str(ip) in skip):
                found.append(ip)
    found.sort(key=lambda ip: ip.version)  # stable: keeps the agent's order within a family
    return str(found[0]) if found else ""


class ProxmoxAPI:
    """One Proxmox VE API: calls (TransientError on 5xx and locks, ProviderError otherwise,
    never the token in a message), retried per call, and tasks waited on until they stop."""

    def __init__(self, settings: ProxmoxSettings, secret: str, clock: Clock,
                 client: httpx.Client | None = None, task_timeout: float = 600.0,
                 poll_interval: float = 2.0) -> None:
        self.token_id = settings.token_id
        self.auth = _TokenAuth(settings.token_id, secret)
        self.base = settings.url.rstrip("/") + "/api2/json"
        self.http = client or _client(settings.ca_file)
        self.clock, self.task_timeout, self.poll_interval = clock, task_timeout, poll_interval

    def request(self, method: str, path: str, **params: Any) -> Any:
        what = f"{method} {path}"
        form = {k: int(v) if isinstance(v, bool) else v for k, v in params.items()
                if v is not None}
        body = {"params": form} if method in ("GET", "DELETE") else {"data": form}
        try:
            resp = self.http.request(method, self.base + path, auth=self.auth, **body)
        except httpx.TransportError as exc:
            # `from None`: the cause carries the request, and with it the token header
            raise TransientError(self.auth.scrub(
                f"Proxmox {what}: {type(exc).__name__}: {exc}")) from None
        if resp.is_success:
            try:
                answer = resp.json()
            except ValueError:
                raise TransientError(f"Proxmox {what}: HTTP {resp.status_code}: not JSON") from None
            return answer.get("data") if isinstance(answer, dict) else None
        message = self.auth.scrub(_message(resp))
        text = f"Proxmox {what}: HTTP {resp.status_code}: {message}"
        if _MISSING.search(message):
            raise Missing(text)
        if resp.status_code >= 500 or _LOCKED.search(message):
            raise TransientError(text)
        if resp.status_code == 401:
            text += f" (check API token {self.token_id} and its secret)"
        raise ProviderError(text)

    def call(self, method: str, path: str, **params: Any) -> Any:
        return retry.call(retry.api_call(self.clock), self.request, method, path, **params)

    def submit(self, method: str, path: str, what: str, **params: Any) -> None:
        """One attempt: the call, then its task (if it started one) until it stops."""
        answer = self.request(method, path, **params)
        if isinstance(answer, str) and answer.startswith("UPID:"):
            self.wait_task(answer, what)

    def task(self, method: str, path: str, what: str, **params: Any) -> None:
        retry.call(retry.api_call(self.clock), self.submit, method, path, what, **params)

    def wait_task(self, upid: str, what: str) -> None:
        path = f"/nodes/{upid.split(':')[1]}/tasks/{upid}/status"

        def stopped() -> dict[str, Any] | None:
            status = self.call("GET", path) or {}
            return status if status.get("status") == "stopped" else None

        done = retry.poll_until(stopped, clock=self.clock, timeout=self.task_timeout,
                                interval=self.poll_interval, on_timeout=lambda: ProviderError(
                                    f"{what}: task {upid} still running after "
                                    f"{self.task_timeout:.0f}s"))
        exit_status = str(done.get("exitstatus") or "")
        if exit_status == "OK":
            return
        if exit_status.startswith("WARNINGS"):  # finished, and logged something on the way
            log.warning("%s: task %s ended with %s", what, upid, exit_status)
            return
        text = self.auth.scrub(f"{what}: task {upid} failed: {exit_status or 'no exit status'}")
        raise (TransientError if _LOCKED.search(exit_status) else ProviderError)(text)

