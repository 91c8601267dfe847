"""The fleet file and how a fleet run goes out: order, canary waves, error budget, site
deployments, the resume tag and the report's summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drover.errors import SpecError
from drover.fleet import (
    FleetSpec,
    fleet_order,
    heartbeat_check_seconds,
    load_fleet,
    over_budget,
    site_deployment,
    split_waves,
    summarize,
    target_tag,
    untouched_rows,
    wave_threads,
)

REPO = Path(__file__).resolve().parents[2]


def fleet(**body: Any) -> FleetSpec:
    spec = {"sites": [{"name": "ams", "clusters": ["a1", "a2", "a3"]},
                      {"name": "fra", "workPool": "pool-fra", "clusters": ["f1"]}], **body}
    return FleetSpec.model_validate({"apiVersion": "drover/v1alpha1", "kind": "Fleet",
                                     "metadata": {"name": "t"}, "spec": spec})


def test_the_shipped_fleet_file_loads() -> None:
    assert load_fleet(REPO / "configs" / "fleet.yaml").spec.sites


def test_order_is_round_robin_over_sites() -> None:
    order = [(site.name, cluster) for site, cluster in fleet_order(fleet().spec.sites)]
    assert order == [("ams", "a1"), ("fra", "f1"), ("ams", "a2"), ("ams", "a3")]


@pytest.mark.parametrize(("count", "waves", "sizes"), [
    (30, [1, "5%"], [1, 2, 27]),          # a canary, 5% of the fleet, then the rest
    (250, [1, "5%"], [1, 13, 236]),
    (3, [1, "5%"], [1, 1, 1]),            # a share is at least one cluster
    (2, [1, 5, 5], [1, 1]),               # waves past the end are dropped
    (4, [], [4]),                         # no waves: one wave of everything
    (10, ["100%"], [10]),
])
def test_waves_are_cut_from_the_fleet(count: int, waves: list, sizes: list[int]) -> None:
    cut = split_waves(list(range(count)), waves)
    assert [len(w) for w in cut] == sizes
    assert sum(cut, []) == list(range(count))


@pytest.mark.parametrize(("wave", "fleet_limit", "threads"), [
    (1, 10, 1), (13, 10, 13), (237, 10, 20), (237, 4, 8), (500, 50, 64)])
def test_a_wave_runs_on_twice_the_fleet_limit_of_threads(wave: int, fleet_limit: int,
                                                        threads: int) -> None:
    limits = fleet(limits={"fleet": fleet_limit}).spec.limits
    assert wave_threads(wave, limits) == threads


@pytest.mark.parametrize(("timeout", "every"), [(90, 10.0), (15, 5.0), (2, 1.0)])
def test_a_silent_worker_is_looked_for_within_a_third_of_its_timeout(timeout: float,
                                                                      every: float) -> None:
    assert heartbeat_check_seconds(timeout) == every


@pytest.mark.parametrize(("failed", "size", "budget", "over"), [
    (0, 10, 0, False), (1, 10, 0, True), (1, 10, 1, False), (2, 10, 1, True),
    (1, 10, "10%", False), (2, 10, "10%", True), (1, 1, "50%", False),
])
def test_a_wave_is_over_budget_only_past_its_budget(failed: int, size: int,
                                                    budget: int | str, over: bool) -> None:
    assert over_budget(failed, size, budget) is over


def test_a_site_with_its_own_pool_runs_its_copy_of_the_deployment() -> None:
    ams, fra = fleet().spec.sites
    assert site_deployment(ams) == "upgrade-cluster/upgrade-cluster"
    assert site_deployment(fra) == "upgrade-cluster/upgrade-cluster-fra"
    assert fleet().work_pools() == ["pool-fra"]


@pytest.mark.parametrize(("body", "problem"), [
    ({"sites": [{"name": "a", "clusters": ["x"]}, {"name": "b", "clusters": ["x"]}]},
     "'x' is listed in both 'a' and 'b'"),
    ({"sites": [{"name": "a", "clusters": ["x"]}, {"name": "a", "clusters": ["y"]}]},
     "a site is listed twice: a"),
    ({"rollout": {"waves": ["150%"]}}, "rollout.waves"),
    ({"rollout": {"errorBudget": -1}}, "rollout.errorBudget"),
    ({"rollout": {"workerTimeoutSeconds": 0}}, "workerTimeoutSeconds"),
])
def test_a_broken_fleet_file_is_refused_with_the_field(tmp_path: Path, body: dict,
                                                       problem: str) -> None:
    path = tmp_path / "fleet.yaml"
    spec = {"sites": [{"name": "a", "clusters": ["x"]}], **body}
    path.write_text(yaml.safe_dump({"apiVersion": "drover/v1alpha1", "kind": "Fleet",
                                    "metadata": {"name": "t"}, "spec": spec}))
    with pytest.raises(SpecError) as caught:
        load_fleet(path)
    assert problem in "\n".join(caught.value.issues)


def test_the_resume_tag_names_the_fleet_and_its_target() -> None:
    assert target_tag("nightly", {"talos_version": "v1.14.0"}) == \
        "drover-fleet/nightly/v1.14.0-same"
    assert target_tag("nightly", {"talos_version": "v1.14.0"}) != \
        target_tag("nightly", {"talos_version": "v1.14.1"})


def test_the_summary_counts_each_outcome_in_order() -> None:
    ams = fleet().spec.sites[0]
    rows = [{"outcome": "failed"}, {"outcome": "upgraded"}, {"outcome": "upgraded"},
            *untouched_rows([(ams, "a3")], 3, "not started")]
    assert summarize(rows) == "2 upgraded, 1 failed, 1 untouched"
    assert rows[-1] | {} == {"site": "ams", "cluster": "a3", "wave": "3",
                             "outcome": "untouched", "detail": "not started", "flow_run": "-"}
