"""Infrastructure backends behind one Provider interface, picked by spec.provider.kind.

The lab registers itself; libvirt (paramiko, the Image Factory client) and Proxmox (httpx)
are imported when a cluster first opens one, so `drover status` of a lab cluster never
loads them. Importing their modules registers the classes themselves."""

from __future__ import annotations

from drover.providers import lab as _lab  # noqa: F401  (registers the backend)
from drover.providers.base import PROVIDERS, Node, Provider, open_provider, register
from drover.spec import ClusterSpec


@register("libvirt")
def _open_libvirt(spec: ClusterSpec) -> Provider:
    from drover.providers.libvirt import Libvirt

    return Libvirt(spec)


@register("proxmox")
def _open_proxmox(spec: ClusterSpec) -> Provider:
    from drover.providers.proxmox import ProxmoxProvider

    return ProxmoxProvider(spec)


__all__ = ["PROVIDERS", "Node", "Provider", "open_provider", "register"]
