"""Predictions without Prefect: calibration from real runs' history, the physical limits, a
fleet's schedule, and the prediction kept for the deploy's summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from drover.calibration import calibrate, history_runs, realistic_profile
from drover.fleet import FleetSpec
from drover.lab.profiles import load_profile
from drover.predict import (
    Phase,
    Prediction,
    fleet_schedule,
    ideal_upgrade,
    lab_copy,
    predicted_line,
    remember_prediction,
)
from drover.spec import ClusterSpec, parse_spec
from drover.timing import History, RunTiming, StageTiming

REALISTIC = load_profile("realistic").durations


def real_deploy(cluster: str, provision: float, configure: float, health: float,
                note: str = "", nodes: int = 3, outcome: str = "completed") -> RunTiming:
    run = RunTiming(cluster, "deploy", 1000.0, 2000.0, outcome, clock_note=note)
    run.node_steps = {f"{cluster}-n{i}": [("provision", 0.0, provision + i),
                                          ("configure", provision + i, provision + i + configure)]
                      for i in range(nodes)}
    run.stages = [StageTiming("health", 0.0, health)]
    return run


def where(kind: str, site: str) -> Any:
    """A remembered spec as calibrate reads it: provider kind and site."""
    return SimpleNamespace(spec=SimpleNamespace(provider=SimpleNamespace(kind=kind)),
                           metadata=SimpleNamespace(site=site))


SITES = {"a": where("libvirt", "ams1"), "b": where("libvirt", "ams1"),
         "other-site": where("libvirt", "fra1"), "proxmox": where("proxmox", "ams1")}


def test_with_no_real_run_the_profile_is_assumed_and_says_so() -> None:
    calibration = calibrate([], "libvirt", "ams1", SITES.get)
    assert calibration.durations == REALISTIC and calibration.runs == 0
    assert calibration.source.startswith("assumed: profiles.yaml")


def test_real_runs_of_the_same_provider_and_site_rescale_each_group_of_steps() -> None:
    runs = [real_deploy("a", 200, 270, 500), real_deploy("b", 200, 270, 500),
            real_deploy("other-site", 10, 10, 10), real_deploy("proxmox", 10, 10, 10),
            real_deploy("a", 10, 10, 10, note="lab, realistic profile, virtual time"),
            real_deploy("b", 10, 10, 10, outcome="failed"), real_deploy("gone", 10, 10, 10)]

    calibration = calibrate(runs, "libvirt", "ams1", SITES.get)

    assert calibration.runs == 2
    assert calibration.source == "calibrated from 2 run(s) of libvirt/ams1"
    durations = calibration.durations
    p50 = {s.group: s.p50 for s in calibration.stats}
    assert p50["provision"] == pytest.approx(201)  # nodes took 200, 201, 202 s
    assert durations["create"] + durations["boot"] == pytest.approx(201)
    assert durations["create"] / durations["boot"] == pytest.approx(
        REALISTIC["create"] / REALISTIC["boot"])  # the profile's split is kept
    assert durations["install"] + durations["reboot"] == pytest.approx(270)
    assert [(s.group, s.runs, s.samples) for s in calibration.stats] == [
        ("provision", 2, 6), ("configure", 2, 6), ("health", 2, 2)]
    assert "provision: p50 201.0s" in calibration.lines()[0]


def test_the_history_file_gives_back_every_cluster_s_runs(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    assert history_runs(path) == []
    history = History(path)
    for run in (real_deploy("a", 100, 100, 100), real_deploy("b", 50, 50, 50)):
        history.begin(run)
        history.record(run)
    assert sorted(run.cluster for run in history_runs(path)) == ["a", "b"]


def test_the_calibrated_profile_holds_only_inside_its_block() -> None:
    calibration = calibrate([real_deploy("a", 1000, 270, 500)], "libvirt", "ams1", SITES.get)
    with realistic_profile(calibration):
        inside = load_profile("realistic")
    assert inside.durations["create"] + inside.durations["boot"] == pytest.approx(1001)
    assert load_profile("realistic").durations == REALISTIC


def test_the_lab_copy_keeps_the_cluster_and_drops_faults_onto_a_pool_that_fits(
        make_spec: Callable[..., ClusterSpec]) -> None:
    spec = make_spec(workers=300, faults=[{"type": "never-boots", "node": "lab-worker-1"}])
    copy = parse_spec(lab_copy(spec, seed=9))
    provider = copy.spec.provider
    assert (provider.profile, provider.compression, provider.seed, provider.faults) == (
        "realistic", 1, 9, [])
    assert provider.network == "10.5.0.0/16" and copy.node_count == 303
    assert copy.spec.patches == spec.spec.patches


def test_the_ideal_upgrade_is_per_batch_time_times_batches() -> None:
    took = {"c-cp-1": 100.0, "c-cp-2": 100.0, "c-cp-3": 100.0,
            **{f"c-worker-{i}": 60.0 for i in range(1, 8)}}
    seconds, how = ideal_upgrade(SimpleNamespace(name="c"), took, 3)  # type: ignore[arg-type]
    assert seconds == 300 + 3 * 60
    assert how == "3 control plane(s) one by one, then 3 batch(es) of 3 at 1m each"


def fleet(**body: Any) -> FleetSpec:
    return FleetSpec.model_validate({"apiVersion": "drover/v1alpha1", "kind": "Fleet",
                                     "metadata": {"name": "f"}, "spec": body})


@pytest.mark.parametrize(("sites", "limits", "waves", "expected"), [
    ([["c1", "c2", "c3", "c4"]], {"fleet": 4, "perSite": 1}, [1], 4),      # one site: serial
    ([["c1", "c2"], ["c3", "c4"]], {"fleet": 4, "perSite": 2}, [4], 1),    # all at once
    ([["c1", "c2"], ["c3", "c4"]], {"fleet": 1, "perSite": 2}, [4], 4),    # fleet limit
    ([["c1", "c2"], ["c3", "c4"]], {"fleet": 4, "perSite": 1}, [1], 3),    # canary, then 2+1
])
def test_a_fleet_schedule_keeps_waves_and_limits(sites: list[list[str]], limits: dict[str, int],
                                                 waves: list[int], expected: int) -> None:
    spec = fleet(limits=limits, rollout={"waves": waves},
                 sites=[{"name": f"s{i}", "clusters": c} for i, c in enumerate(sites)])
    assert fleet_schedule(spec, 100.0)["seconds"] == expected * 100.0


def test_a_kept_prediction_is_set_beside_what_the_deploy_took() -> None:
    assert predicted_line("c", 500) is None
    prediction = Prediction("c", 5, "assumed: profiles.yaml", 1, phases=[
        Phase("deploy", 400.0, 390.0, "c-cp-1: create 40s", 3.0, 9.0)])
    path = remember_prediction(prediction)
    assert path.stat().st_mode & 0o777 == 0o600
    assert predicted_line("c", 440) == ("predicted 6m40s (assumed: profiles.yaml); took "
                                        "7m20s (+10%)")
