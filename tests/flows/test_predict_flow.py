"""Predictions through the real flows: a prediction under exact virtual time against a
compressed wall-clock run of the same config and seed, and upgrades that roll workers in a
sliding window (the next one starts the moment one ends)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drover.clock import AutojumpClock, use_clock
from drover.home import drover_home
from drover.predict import predict
from drover.timing import History
from flows.deploy import deploy_cluster
from flows.upgrade import upgrade_cluster
from tests.flows.conftest import lab_config
from tests.flows.test_deploy_flow import lab_of


def test_a_prediction_is_within_15_percent_of_a_compressed_wall_clock_run(
        tmp_path: Path) -> None:
    """3+1 on the realistic profile, seed 7: predicted under exact virtual time in seconds,
    then deployed on the wall clock compressed 20x (about 25 s) and scaled back up."""
    config = lab_config(tmp_path, workers=1, profile="realistic", seed=7)
    prediction = predict(config, deploy_cluster, seed=7)

    wall = tmp_path / "wall"
    wall.mkdir()  # the same cluster name: the lab's seeded draws are per node name
    deploy_cluster(config=lab_config(wall, workers=1, profile="realistic", seed=7,
                                     clock="system", compression=20))
    took = History(drover_home() / "history.db").runs("t", "deploy")[-1].total

    predicted = prediction.phases[0]
    assert predicted.wall_seconds == pytest.approx(took, rel=0.15)
    assert predicted.efficiency > 0.95  # under exact time nothing but the lab takes time
    assert prediction.source.startswith("assumed: profiles.yaml")
    assert predicted.critical_path.startswith("t-cp-")


def test_upgrade_workers_roll_in_a_window_the_next_starting_when_any_one_ends(
        tmp_path: Path) -> None:
    """maxUnavailable 2 over 5 workers on the jittered demo profile: each later worker is
    cordoned the moment an earlier one is uncordoned, never more than 2 are away."""
    config = lab_config(tmp_path, workers=5, profile="demo", seed=3)
    clock = AutojumpClock()
    with use_clock(clock), clock.participant():
        deploy_cluster(config=config)
        since = clock.now()
        upgrade_cluster(cluster="t", talos_version="v1.14.0", max_unavailable=2)

    events = [(at, node, what) for at, node, what in lab_of(config).events()
              if at >= since and node and "worker" in node]
    cordoned = {node: at for at, node, what in events if what == "cordoned"}
    uncordoned = {node: at for at, node, what in events if what == "uncordoned"}
    assert len(cordoned) == len(uncordoned) == 5
    starts = sorted(cordoned.values())
    ends = sorted(uncordoned.values())
    for start in starts[2:]:  # each later start is some earlier end, to the virtual second
        assert any(start == pytest.approx(end, abs=1e-6) for end in ends)
    away = max(sum(1 for n in cordoned if cordoned[n] <= at < uncordoned[n]) for at in starts)
    assert away == 2
    # not batch by batch: the third worker started before the second of the first pair ended
    first_pair_end = sorted(uncordoned[n] for n in sorted(cordoned, key=cordoned.get)[:2])
    assert starts[2] < first_pair_end[1]
