"""The chaos soak in CI: a few dozen seeded schedules (`make soak` runs a thousand).

Each schedule's violations name its seed; `python -m tests.chaos.soak --only SEED` replays it.
"""

from __future__ import annotations

import os

import pytest

from drover.home import drover_home
from tests.chaos.soak import draw, play

SCHEDULES = int(os.environ.get("SOAK_SCHEDULES", "36"))


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DROVER_HOME", str(tmp_path))  # play() points it at a fresh folder
    yield
    assert drover_home()


def test_schedules_cover_kills_overlaps_and_every_fault() -> None:
    schedules = [draw(seed) for seed in range(SCHEDULES)]
    steps = [step for s in schedules for step in s.steps]
    assert sum(step.kill_at is not None for step in steps) >= SCHEDULES // 2
    assert sum(step.overlap_at is not None for step in steps) >= SCHEDULES // 2
    kinds = {f["type"] for s in schedules for f in s.faults}
    assert kinds == {"create-fails", "talos-api-errors", "upgrade-fails", "never-boots",
                     "dies", "drain-blocked"}


@pytest.mark.parametrize("seed", range(SCHEDULES))
def test_schedule_keeps_every_invariant(seed: int) -> None:
    assert play(seed) == []
