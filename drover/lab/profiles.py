"""Lab latency profiles: how long each lifecycle step takes, with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import yaml

Step = Literal["create", "boot", "install", "reboot", "bootstrap", "etcd_join", "apiserver",
               "node_ready"]
STEPS: tuple[str, ...] = ("create", "boot", "install", "reboot", "bootstrap", "etcd_join",
                          "apiserver", "node_ready")


@dataclass(frozen=True)
class Profile:
    name: str
    durations: dict[str, float]
    jitter: float
    compression: float = 1.0

    def duration(self, step: str, rng: random.Random) -> float:
        """One draw of how long `step` takes, compressed by the declared factor."""
        base = self.durations[step] / self.compression
        if not self.jitter or not base:
            return base
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


@cache
def _table() -> dict[str, dict[str, float]]:
    text = resources.files("drover.lab").joinpath("profiles.yaml").read_text()
    return yaml.safe_load(text)


def load_profile(name: str, compression: float = 1.0) -> Profile:
    raw = dict(_table()[name])
    jitter = float(raw.pop("jitter", 0))
    missing = set(STEPS) - set(raw)
    if missing:  # a broken profiles.yaml is a packaging bug, caught by the unit tests
        raise ValueError(f"lab profile {name!r} lacks steps: {', '.join(sorted(missing))}")
    return Profile(name, {k: float(v) for k, v in raw.items()}, jitter, compression)
