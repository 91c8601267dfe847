"""hold_cluster outside a flow run and without a Prefect server: drover's lease alone,
owned by this process."""

from __future__ import annotations

import os

import pytest

from drover import lease
from drover.errors import ClusterBusy
from tasks.lease import hold_cluster, run_owner


def test_outside_a_flow_the_process_owns_the_lease(make_spec) -> None:  # type: ignore[no-untyped-def]
    with hold_cluster(make_spec(name="lab"), "deploy", server_limit=False) as held:
        assert held.info.owner.startswith(f"pid-{os.getpid()}-")
        assert lease.holder("lab") == held.info
    assert lease.holder("lab") is None


def test_second_comer_fails_naming_the_first() -> None:
    refused = pytest.raises(ClusterBusy, match=r"lab: busy with replace \(run pid-")
    with hold_cluster("lab", "replace", server_limit=False), refused, \
            hold_cluster("lab", "destroy", server_limit=False):
        pass


def test_a_failing_body_releases_the_cluster() -> None:
    with pytest.raises(RuntimeError), hold_cluster("lab", "upgrade", server_limit=False):
        raise RuntimeError("step failed")
    assert lease.holder("lab") is None


def test_owner_outside_a_flow_is_stable_within_the_process() -> None:
    assert run_owner() == run_owner()
