"""The creation ledger: clean-up after a failed run finds only the nodes its own run created."""

from __future__ import annotations

from drover import ledger


def test_created_by_lists_only_the_runs_own_nodes() -> None:
    ledger.record_created("lab", "lab-cp-1", "run-a")
    ledger.record_created("lab", "lab-worker-1", "run-a")
    ledger.record_created("lab", "lab-cp-2", "run-b")
    ledger.record_created("other", "other-cp-1", "run-a")
    assert ledger.created_by("lab", "run-a") == ["lab-cp-1", "lab-worker-1"]
    assert ledger.created_by("lab", "run-b") == ["lab-cp-2"]
    assert ledger.created_by("lab", "run-c") == []


def test_losing_racer_cleans_up_nothing_of_the_winners() -> None:
    """The issue-7 race: the winner created every node; the loser created none of them."""
    for node in ("lab-cp-1", "lab-cp-2", "lab-cp-3"):
        ledger.record_created("lab", node, "winner")
    assert ledger.created_by("lab", "loser") == []


def test_a_node_recreated_by_a_later_run_belongs_to_that_run() -> None:
    ledger.record_created("lab", "lab-worker-1", "run-a")
    ledger.record_created("lab", "lab-worker-1", "run-b")
    assert ledger.created_by("lab", "run-a") == []
    assert ledger.created_by("lab", "run-b") == ["lab-worker-1"]


def test_forget_drops_named_nodes_or_the_whole_cluster() -> None:
    for node in ("lab-cp-1", "lab-cp-2", "lab-worker-1"):
        ledger.record_created("lab", node, "run-a")
    ledger.record_created("other", "other-cp-1", "run-a")
    ledger.forget("lab", ["lab-cp-2", "absent"])
    assert ledger.created_by("lab", "run-a") == ["lab-cp-1", "lab-worker-1"]
    ledger.forget("lab")
    assert ledger.created_by("lab", "run-a") == []
    assert ledger.created_by("other", "run-a") == ["other-cp-1"]


def test_names_are_data_not_sql() -> None:
    name = "lab'; DROP TABLE created_nodes; --"
    ledger.record_created(name, "n1", "run-a")
    assert ledger.created_by(name, "run-a") == ["n1"]
