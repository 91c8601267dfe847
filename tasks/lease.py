"""hold_cluster: the flows' way to take a cluster's lease for one mutating operation, owned
by the flow run. drover's own lease (drover/lease.py) is the authority in every mode.

With DROVER_PREFECT_CLUSTER_SLOT=1 and a Prefect server, the run also holds a slot of the
global concurrency limit `drover-cluster-<name>` (limit 1, created on first use): the UI's
Concurrency page shows who holds a cluster, and workers on other hosts that share the server
but not $DROVER_HOME are kept out too. It is off by default because a killed holder keeps
that slot until its Prefect lease runs out (SERVER_LEASE_SECONDS), where drover's own lease
is taken over at once from a dead process on this host.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from functools import cache
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.sync import concurrency
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL

from drover import lease
from drover.errors import ClusterBusy
from drover.spec import ClusterSpec

#: Prefect renews its slot leases in the background; its minimum lease is 60 s
SERVER_LEASE_SECONDS = 60
SLOT_SWITCH = "DROVER_PREFECT_CLUSTER_SLOT"


def run_owner() -> str:
    """The owner recorded on leases and creations: the flow run's id, else (outside any flow
    run) one id for this process, the same on every call."""
    run_id = flow_run.id
    return str(run_id) if run_id else process_owner(os.getpid())


@cache
def process_owner(pid: int) -> str:
    return f"pid-{pid}-{uuid.uuid4().hex[:8]}"


def limit_name(cluster: str) -> str:
    return f"drover-cluster-{cluster}"


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("drover")


def ensure_limit(name: str) -> None:
    """Create the limit (1 slot) if it is missing; an operator's changes to it are kept."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1))


@contextmanager
def server_slot(cluster: str, owner: str, if_busy: str, wait_seconds: float) -> Iterator[None]:
    """Hold the cluster's slot on the Prefect server; busy → ClusterBusy."""
    name = limit_name(cluster)
    ensure_limit(name)
    try:
        run_id = uuid.UUID(owner)
    except ValueError:
        holder = None
    else:
        holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id)
    waiting = {"timeout_seconds": wait_seconds} if if_busy == "wait" else {"max_retries": 0}
    try:
        slot = concurrency(name, occupy=1, lease_duration=SERVER_LEASE_SECONDS, strict=True,
                           holder=holder, raise_on_lease_renewal_failure=False, **waiting)
        slot.__enter__()
    except Exception as exc:  # 423 Locked (fail) or a timeout (wait)
        raise ClusterBusy(
            f"{cluster}: Prefect's concurrency limit {name} is held by another flow run "
            "(on another host, or one whose drover lease expired); see Concurrency in the "
            f"Prefect UI ({type(exc).__name__}: {exc})") from None
    try:
        yield
    finally:
        slot.__exit__(None, None, None)


@contextmanager
def hold_cluster(cluster: ClusterSpec | str, operation: str, *, if_busy: str = "fail",
                 wait_seconds: float = 600, ttl: float = 60,
                 server_limit: bool | None = None) -> Iterator[lease.Lease]:
    """Hold `cluster` for `operation` (deploy, upgrade, replace, destroy) for this run.

    if_busy "fail" raises ClusterBusy naming the holder at once; "wait" waits up to
    `wait_seconds`. `server_limit` (default: $DROVER_PREFECT_CLUSTER_SLOT=1 with
    PREFECT_API_URL set) adds the Prefect concurrency slot. Check `lease.lost` (or call
    `lease.check()`) between steps.
    """
    name = cluster.name if isinstance(cluster, ClusterSpec) else cluster
    owner, logger = run_owner(), run_logger()

    def say_waiting(info: lease.LeaseInfo) -> None:
        logger.info("%s; waiting up to %.0fs", lease.describe(info), wait_seconds)

    held = lease.acquire(name, operation, owner, if_busy=if_busy,  # type: ignore[arg-type]
                         wait_seconds=wait_seconds, ttl=ttl, on_wait=say_waiting)
    use_server = (os.environ.get(SLOT_SWITCH) == "1" and bool(PREFECT_API_URL.value())
                  if server_limit is None else server_limit)
    with held, server_slot(name, owner, if_busy, wait_seconds) if use_server else nullcontext():
        logger.info("%s: %s holds the cluster (run %s)", name, operation, owner)
        yield held
