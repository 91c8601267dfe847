"""drover.clock: exact virtual time (AutojumpClock) with real threads, and CPU measurement.

Every test runs real threads on a clock whose time moves only when they all wait, so
nothing sleeps; a broken clock fails fast through a short stall_seconds, never hangs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from drover.clock import (
    AutojumpClock,
    Clock,
    ManualClock,
    SystemClock,
    cpu_seconds,
    installed_clock,
    measure,
    thread_cpu_seconds,
    use_clock,
)
from drover.deploy import (
    Infra,
    bootstrap_etcd,
    configure_node,
    prepare_cluster_dir,
    provision_node,
    resolve_image,
    wait_healthy,
)
from drover.errors import DroverError
from drover.lab.datacenter import Datacenter
from drover.spec import ClusterSpec, NodeSpec

START = 1000.0


@pytest.fixture
def clock() -> AutojumpClock:
    return AutojumpClock(START, stall_seconds=2.0)


def settled(condition: Callable[[], object]) -> None:
    """Until another thread reached a state (bounded; no fixed sleep)."""
    deadline = time.monotonic() + 5
    while not condition() and time.monotonic() < deadline:
        threading.Event().wait(0.001)
    assert condition()


def test_parallel_sleeps_wake_in_order_each_at_its_own_moment(clock: AutojumpClock) -> None:
    woke: list[tuple[float, float]] = []

    def nap(seconds: float) -> float:
        clock.sleep(seconds)
        woke.append((seconds, clock.now()))
        return clock.now()

    with ThreadPoolExecutor(3) as pool, clock.participant():
        futures = [clock.submit(pool, nap, s) for s in (3, 1, 2)]
        with clock.blocked():
            ends = [f.result() for f in futures]
    assert woke == [(1, START + 1), (2, START + 2), (3, START + 3)]
    assert ends == [START + 3, START + 1, START + 2]
    assert clock.now() == START + 3


def test_time_stands_still_while_a_participant_runs(clock: AutojumpClock) -> None:
    working, done = threading.Event(), threading.Event()
    seen: list[float] = []

    def work() -> None:
        working.set()
        done.wait(5)  # real work the clock knows nothing of: it holds time still
        seen.append(clock.now())

    def nap() -> None:
        clock.sleep(10)
        seen.append(clock.now())

    with ThreadPoolExecutor(2) as pool:
        busy = clock.submit(pool, work)
        napping = clock.submit(pool, nap)
        working.wait(5)
        settled(lambda: clock._sleepers)  # the napper waits for its moment: time holds
        assert clock.now() == START
        done.set()
        busy.result(5)
        napping.result(5)
    assert seen == [START, START + 10]


def test_no_jump_between_submit_and_start(clock: AutojumpClock) -> None:
    """Work announced with expect() holds time until its thread takes it up."""
    release = threading.Event()
    seen: list[float] = []
    ticket = clock.expect("late starter")

    def late() -> None:
        release.wait(5)  # the thread pool is slow to start the body
        with clock.participant(ticket):
            seen.append(clock.now())

    def nap() -> None:
        clock.sleep(5)
        seen.append(clock.now())

    starter = threading.Thread(target=late)
    with ThreadPoolExecutor(1) as pool:
        napping = clock.submit(pool, nap)
        starter.start()
        settled(lambda: clock._sleepers)  # the napper waits; the ticket holds time
        assert clock.now() == START
        release.set()
        starter.join(5)
        napping.result(5)
    assert seen == [START, START + 5]


def test_a_ticket_carried_in_a_copied_context_is_taken_up(clock: AutojumpClock) -> None:
    """As Prefect's thread-pool runner does: copy_context() at submit, run in it later."""
    from contextvars import copy_context

    seen: list[str] = []

    def step(name: str, seconds: float) -> None:
        clock.sleep(seconds)
        seen.append(name)

    with ThreadPoolExecutor(2) as pool, clock.participant():
        tickets = []
        for name, seconds in (("slow", 2), ("fast", 1)):
            ticket = clock.expect(name)
            with ticket.carried():
                future = pool.submit(copy_context().run, step, name, seconds)
            future.add_done_callback(ticket.close)
            tickets.append(ticket)
        first = clock.wait_for(tickets, first=True)
        assert [t.label for t in first] == ["fast"] and clock.now() == START + 1
        clock.wait_for(tickets)
    assert seen == ["fast", "slow"] and clock.now() == START + 2


def test_a_participant_blocked_on_a_future_lets_time_move(clock: AutojumpClock) -> None:
    with ThreadPoolExecutor(1) as pool, clock.participant():
        future = clock.submit(pool, clock.sleep, 30)
        with clock.blocked():
            future.result(5)
        assert clock.now() == START + 30


def test_a_participant_blocked_without_saying_so_stalls_with_a_clear_error() -> None:
    clock = AutojumpClock(START, stall_seconds=0.2)
    with ThreadPoolExecutor(1) as pool, clock.participant():
        future = clock.submit(pool, clock.sleep, 30, label="napper")
        with pytest.raises(DroverError, match="stalled.*clock.blocked"):
            future.result(5)  # not inside blocked(): the flow thread holds time still


def test_every_participant_waiting_with_nothing_due_is_a_deadlock(clock: AutojumpClock) -> None:
    """Two tasks each waiting for the other, and the flow waiting for both: an error in
    every waiter naming the units, not a hang."""
    errors: list[str] = []
    first, second = clock.expect("first"), clock.expect("second")

    def wait_on(mine: object, other: object) -> None:
        with clock.participant(mine):  # type: ignore[arg-type]
            try:
                clock.wait_for([other])  # type: ignore[list-item]
            except DroverError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=wait_on, args=(first, second)),
               threading.Thread(target=wait_on, args=(second, first))]
    with clock.participant():
        for thread in threads:
            thread.start()
        with pytest.raises(DroverError, match="deadlock.*no wake-up is pending.*first"):
            clock.wait_for([first, second])
    for thread in threads:
        thread.join(5)
    assert len(errors) == 2 and all("deadlock" in e for e in errors)


def test_a_thread_taking_no_part_sleeps_like_a_manual_clock(clock: AutojumpClock) -> None:
    clock.sleep_until(START + 7)
    assert clock.now() == START + 7
    clock.sleep_until(START + 1)  # the past: returns at once
    assert clock.now() == START + 7


def test_participant_is_reentrant(clock: AutojumpClock) -> None:
    with clock.participant(), clock.participant():
        clock.sleep(2)
    with clock.participant():
        clock.sleep(1)
    assert clock.now() == START + 3
    assert clock._running == 0 and not clock._units


@pytest.mark.parametrize("make", [SystemClock, ManualClock])
def test_other_clocks_accept_the_participation_calls(make: type[Clock]) -> None:
    clock = make()
    with clock.participant(), clock.blocked(), ThreadPoolExecutor(1) as pool:
        future: Future[int] = clock.submit(pool, lambda: 7)
        assert future.result(5) == 7
        ticket = clock.expect("x")
        with ticket.carried():
            pass
        ticket.close()
        assert clock.wait_for([ticket]) == [ticket]


def test_use_clock_installs_a_clock_for_the_context() -> None:
    clock = ManualClock()
    assert installed_clock() is None
    with use_clock(clock):
        assert installed_clock() is clock
    assert installed_clock() is None


def test_cpu_time_is_measured_on_the_wall_clock_beside_virtual_time(
        clock: AutojumpClock) -> None:
    before, thread_before = cpu_seconds(), thread_cpu_seconds()
    with measure(clock) as usage:
        sum(i * i for i in range(200_000))  # real work
        clock.sleep(3600)                   # an hour of virtual waiting, no real wait
    assert usage.virtual_seconds == 3600
    assert 0 < usage.cpu_seconds < 5 and 0 < usage.wall_seconds < 5
    assert cpu_seconds() > before and thread_cpu_seconds() > thread_before


# ---- the lab on exact virtual time ---------------------------------------------------
def chain_seconds(dc: Datacenter, node: str) -> float:
    """A node's own chain up to running: create, boot, install and reboot, as the lab draws
    them (seeded, so the same numbers the deploy meets)."""
    return sum(dc._draw(step, node) for step in ("create", "boot", "install", "reboot"))


def node_infra(spec: ClusterSpec, dc: Datacenter, node: str) -> Infra:
    """Backends for `node`'s pipeline: its waits wake only for changes that concern it
    (Infra.wait passes the node's name to next_change_at)."""
    return Infra.on_lab(spec, dc)


def test_a_parallel_lab_deploy_takes_its_critical_path_in_milliseconds(
        tmp_path: Path, make_spec: Callable[..., ClusterSpec]) -> None:
    """3 + 20 nodes on the realistic profile, each node's pipeline in its own thread of a
    pool standing in for Prefect's task runner; etcd bootstrapped by the first control
    plane to run, at that moment."""
    spec = make_spec(control_planes=3, workers=20, profile="realistic", seed=7)
    clock = AutojumpClock(START, stall_seconds=10)
    dc = Datacenter(spec, tmp_path / "lab.db", clock)
    infra = Infra.on_lab(spec, dc)
    bootstrap = threading.Lock()

    def pipeline(node: NodeSpec) -> float:
        mine = node_infra(spec, dc, node.name)
        provision_node(mine, node, image)
        configure_node(mine, node)
        if node.role == "controlplane":
            with clock.blocked():  # waiting for a lock: time may move meanwhile
                bootstrap.acquire()
            try:
                bootstrap_etcd(mine)
            finally:
                bootstrap.release()
        return clock.now()

    wall = time.perf_counter()
    with measure(clock) as usage, clock.participant():
        prepare_cluster_dir(spec)
        image = resolve_image(infra)
        with ThreadPoolExecutor(max_workers=23) as pool:
            tickets = [clock.submit(pool, pipeline, n, label=n.name) for n in spec.declared_nodes()]
            with clock.blocked():
                running_at = [t.result(10) for t in tickets]
        health = wait_healthy(infra)
    wall = time.perf_counter() - wall

    chains = {n.name: chain_seconds(dc, n.name) for n in spec.declared_nodes()}
    assert max(running_at) - START == pytest.approx(max(chains.values()), abs=1e-6)
    assert sum(chains.values()) > 10 * max(chains.values())  # parallel, not one by one
    events = dc.events()
    running = {node: at for at, node, what in events if what == "running"}
    first_cp = min(running[n.name] for n in spec.declared_nodes() if n.role == "controlplane")
    assert [at for at, _, what in events if what == "bootstrap"] == [pytest.approx(first_cp)]
    last_ready = max(at for at, _, what in events if what == "ready")
    assert usage.virtual_seconds == pytest.approx(last_ready - START, abs=1e-6)
    assert len(health.ready) == 23 and usage.virtual_seconds > 300
    # about 1 s on an idle 2-core machine (bench/ measures it; this only guards the order)
    assert wall < 10.0, f"{wall:.2f}s of wall time for {usage.virtual_seconds:.0f}s virtual"
