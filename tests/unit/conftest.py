"""Shared unit-test fixtures: a private DROVER_HOME, cluster specs, and labs on a manual clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from drover.lab.clock import Clock, ManualClock
from drover.lab.datacenter import Datacenter
from drover.spec import ClusterSpec, parse_spec


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $DROVER_HOME, so nothing touches ~/.drover."""
    monkeypatch.setenv("DROVER_HOME", str(tmp_path))
    return tmp_path


def build_spec(*, name: str = "lab", control_planes: int = 3,
               workers: int | Sequence[dict[str, Any]] = 2, profile: str = "demo",
               faults: Sequence[dict[str, Any]] = (), seed: int | None = 1,
               talos_api: str = "lab", deployment: dict[str, Any] | None = None,
               **provider: Any) -> ClusterSpec:
    """A ClusterSpec shaped like configs/lab.yaml, with inline patches only.

    `workers` is a count for one pool named "worker", or a list of pool mappings;
    further keyword arguments land in spec.provider (compression, clock, network).
    """
    pools = ([{"name": "worker", "count": workers, "size": {"cpus": 4, "memoryMib": 8192,
                                                             "diskGib": 40}}]
             if isinstance(workers, int) else list(workers))
    data: dict[str, Any] = {
        "apiVersion": "drover/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "site": "local"},
        "spec": {
            "talos": {"version": "v1.13.9", "api": talos_api,
                      "schematic": {"extensions": ["siderolabs/qemu-guest-agent"],
                                    "extraKernelArgs": ["console=ttyS0"]}},
            "kubernetes": {"version": "1.36.3", "endpoint": "https://10.5.0.2:6443"},
            "controlPlane": {"count": control_planes,
                             "size": {"cpus": 2, "memoryMib": 4096, "diskGib": 20}},
            "workers": pools,
            "patches": {
                "all": [{"machine": {"sysctls": {"vm.max_map_count": "262144"}}}],
                "controlPlane": [{"cluster": {"allowSchedulingOnControlPlanes": False}}],
            },
            "provider": {"kind": "lab", "profile": profile, "seed": seed,
                         "faults": list(faults), **provider},
            "deployment": {"targetMinutes": 10, "baselineMinutes": 45, **(deployment or {})},
        },
    }
    return parse_spec(data, source="test")


@pytest.fixture
def make_spec() -> Callable[..., ClusterSpec]:
    """make_spec(control_planes=3, workers=2, profile="demo", faults=[...], **overrides)."""
    return build_spec


@pytest.fixture
def lab(tmp_path: Path) -> Callable[..., Datacenter]:
    """lab(spec, clock=None): a Datacenter on tmp_path/lab.db driven by a ManualClock.

    The file is $DROVER_HOME/lab.db too, so backends opened from the spec share it.
    """
    def open_lab(spec: ClusterSpec, clock: Clock | None = None) -> Datacenter:
        return Datacenter(spec, tmp_path / "lab.db", clock or ManualClock())
    return open_lab
