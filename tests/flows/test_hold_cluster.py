"""hold_cluster on a real Prefect server (the session harness): the flow run owns the lease,
the cluster's global concurrency limit is created and occupied while held, and a second
holder of the server slot is refused naming the limit."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.client.orchestration import get_client

from drover import lease
from drover.errors import ClusterBusy
from tasks.lease import hold_cluster, limit_name, server_slot


def active_slots(cluster: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(limit_name(cluster)).active_slots


def test_flow_run_owns_the_lease_and_a_server_slot_when_switched_on(monkeypatch) -> None:
    monkeypatch.setenv("DROVER_PREFECT_CLUSTER_SLOT", "1")

    @flow
    def operate() -> tuple[str, str, int]:
        from prefect.runtime import flow_run
        with hold_cluster("lab", "deploy") as held:
            return held.info.owner, str(flow_run.id), active_slots("lab")

    owner, run_id, slots = operate()
    assert owner == run_id and slots == 1
    assert active_slots("lab") == 0
    assert lease.holder("lab") is None


def test_no_server_slot_by_default_so_a_killed_holder_never_wedges_the_cluster() -> None:
    with hold_cluster("lab3", "deploy"):
        with get_client(sync_client=True) as client:
            names = {limit.name for limit in client.read_global_concurrency_limits(limit=200)}
        assert limit_name("lab3") not in names


def test_second_server_slot_holder_is_refused_at_once() -> None:
    refused = pytest.raises(ClusterBusy, match="busy: Prefect's concurrency limit "
                            "drover-cluster-busy is held by another flow run")
    with server_slot("busy", "run-a", "fail", 0), refused, server_slot("busy", "run-b", "fail", 0):
        pass
    with server_slot("busy", "run-c", "fail", 0):
        assert active_slots("busy") == 1


def test_second_comer_is_refused_by_drovers_lease_first() -> None:
    refused = pytest.raises(ClusterBusy, match="lab2: busy with deploy")
    with hold_cluster("lab2", "deploy"), refused, hold_cluster("lab2", "upgrade"):
        pass
