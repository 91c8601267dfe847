"""Talos API backends behind one TalosAPI interface, picked by spec.talos.api."""

from drover.talos import lab as _lab  # noqa: F401  (registers the backend)
from drover.talos import talosctl as _talosctl  # noqa: F401  (registers the backend)
from drover.talos.base import (
                               ClusterHealth,
                               EtcdMember,
                               MachineStatus,
                               TalosAPI,
                               open_talos,
                               register,
)

__all__ = ["ClusterHealth", "EtcdMember", "MachineStatus", "TalosAPI", "open_talos", "register"]
