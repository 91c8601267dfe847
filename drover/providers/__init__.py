"""Infrastructure backends behind one Provider interface, picked by spec.provider.kind."""

from drover.providers import lab as _lab  # noqa: F401  (registers the backend)
from drover.providers import libvirt as _libvirt  # noqa: F401  (registers the backend)
from drover.providers import proxmox as _proxmox  # noqa: F401  (registers the backend)
from drover.providers.base import PROVIDERS, Node, Provider, open_provider, register

__all__ = ["PROVIDERS", "Node", "Provider", "open_provider", "register"]
