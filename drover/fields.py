"""Checks of single values in the cluster config: Talos versions, endpoints, DNS names, URLs,
device paths and networks. Each returns the value or raises ValueError with a message that
says what is allowed (pydantic puts the YAML path in front). Values are quoted cut short.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from drover.validation import shown

#: Talos versions drover can drive, as (major, minor). The minimum is v1.12 because drover
#: renders v1.13-style configs: the hostname travels in a HostnameConfig document (added in
#: v1.12) and the installer boots with grubUseUKICmdline (set by gen config from v1.12). The
#: maximum is v1.15 because drover ships the official schemas of v1.13 and v1.15 and checks
#: patches against them; a newer Talos needs its schema packaged first.
SUPPORTED_TALOS = ((1, 12), (1, 15))
#: the lab assigns node addresses from its network (every address may be materialised), so
#: its size is bounded: IPv4 /16 at most (65,536 addresses), IPv6 /112 at most (the same)
LAB_MIN_PREFIX = {4: 16, 6: 112}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DEVICE = re.compile(r"/dev/[A-Za-z0-9._:+@-]+(/[A-Za-z0-9._:+@-]+)*")
_LOOPBACK_NAMES = {"localhost"}


def talos_version(value: str) -> str:
    """A Talos version inside SUPPORTED_TALOS (the pattern is checked before)."""
    major, minor = (int(part) for part in value.lstrip("v").split(".")[:2])
    (low_major, low_minor), (high_major, high_minor) = SUPPORTED_TALOS
    if not (low_major, low_minor) <= (major, minor) <= (high_major, high_minor):
        raise ValueError(f"Talos {shown(value)} is not supported: drover renders and checks "
                         f"configs for v{low_major}.{low_minor}.0 to v{high_major}.{high_minor}.x")
    return value


def dns_name(value: str) -> bool:
    """Whether `value` is a DNS name: dot-separated lower-case labels, at most 253 characters."""
    labels = value.rstrip(".").split(".")
    return (0 < len(value) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


def dns_domain(value: str) -> str:
    if not dns_name(value):
        raise ValueError(f"must be a DNS domain like cluster.local (lower-case labels of "
                         f"letters, digits and '-', separated by dots), got {shown(value)}")
    return value


def _host_is_name_or_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return dns_name(host)
    return True


def endpoint(value: str) -> str:
    """https://<IP or DNS name>[:port], port 1..65535, nothing else."""
    example = "must be an https URL like https://10.5.0.2:6443"
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        raise ValueError(f"{example} with a port from 1 to 65535, got {shown(value)}") from None
    if (url.scheme != "https" or url.username is not None or url.password is not None
            or url.path not in ("", "/") or url.query or url.fragment or not url.hostname
            or not _host_is_name_or_ip(url.hostname)):
        raise ValueError(f"{example} (an IP address or DNS name, no path), got {shown(value)}")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{example}: the port must be from 1 to 65535, got {port}")
    return value


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def image_factory(value: str) -> str:
    """An https base URL (http only to a loopback host, for tests), no credentials."""
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError(f"must be an https URL like https://factory.talos.dev, "
                         f"got {shown(value)}") from None
    host = url.hostname or ""
    if url.scheme not in ("https", "http") or not host or not _host_is_name_or_ip(host):
        raise ValueError(f"must be an https URL like https://factory.talos.dev, "
                         f"got {shown(value)}")
    if url.scheme == "http" and not _loopback(host):
        raise ValueError("must use https (http is allowed only for a loopback address, "
                         f"in tests), got {shown(value)}")
    if url.username is not None or url.password is not None:
        raise ValueError("must not carry credentials (user:password@): the URL is written "
                         "into every node's config")
    if url.query or url.fragment or ".." in url.path.split("/"):
        raise ValueError(f"must be a plain base URL (no query, fragment or '..'), "
                         f"got {shown(value)}")
    return value


def install_disk(value: str) -> str:
    """A device path: /dev/vda, /dev/nvme0n1, /dev/disk/by-id/…; no shell metacharacters."""
    if (len(value) > 255 or not _DEVICE.fullmatch(value)
            or any(part in (".", "..") for part in value.split("/"))):
        raise ValueError("must be a device path like /dev/vda or /dev/disk/by-id/<id> "
                         f"(letters, digits and . _ : + @ -), got {shown(value)}")
    return value


def lab_network(value: str) -> str:
    """A CIDR the lab can assign every node address from."""
    try:
        network = ipaddress.ip_network(value)
    except ValueError:
        raise ValueError(f"{shown(value)} is not a CIDR like 10.5.0.0/24") from None
    smallest = LAB_MIN_PREFIX[network.version]
    if network.prefixlen < smallest:
        raise ValueError(f"{value} is too large: the lab assigns node addresses from it, so it "
                         f"may be at most a /{smallest} (IPv{network.version})")
    return value


def overlaps(named: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(name a, name b, message) for every two CIDRs from different names that overlap;
    each value of `named` is a list of valid CIDRs."""
    found = []
    items = [(name, ipaddress.ip_network(cidr, strict=False))
             for name, cidrs in named.items() for cidr in cidrs]
    for i, (name_a, net_a) in enumerate(items):
        for name_b, net_b in items[i + 1:]:
            if name_a != name_b and net_a.version == net_b.version and net_a.overlaps(net_b):
                found.append((name_a, name_b, f"{net_b} overlaps {name_a} {net_a}"))
    return found
