"""The cluster lease: one holder at a time across threads and processes, expiry and takeover
on an injected clock, a SIGKILLed holder taken over at once, heartbeats, and busy messages
that name the holder. Contention runs against the real SQLite file in $DROVER_HOME."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from drover import lease
from drover.errors import ClusterBusy
from drover.lab.clock import ManualClock, SystemClock

HOLDER = """
import sys
from drover import lease
mode = sys.argv[1]
try:
    held = lease.acquire("lab", "deploy", "run-" + sys.argv[2], ttl=float(sys.argv[3]))
except Exception as exc:
    print("busy", type(exc).__name__, flush=True)
    sys.exit(0)
print("held", flush=True)
sys.stdin.readline()
held.release()
print("released", flush=True)
"""


def start_holder(run: str, ttl: float = 60) -> subprocess.Popen[str]:
    """A child process that takes the lease, says so, and holds it until its stdin speaks."""
    return subprocess.Popen([sys.executable, "-c", HOLDER, "hold", run, str(ttl)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def take(owner: str, clock: ManualClock, **kwargs: object) -> lease.Lease:
    return lease.acquire("lab", "deploy", owner, clock=clock, heartbeat=False, **kwargs)


def until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    """Wait for another thread's doing, bounded; returns whether it happened."""
    pause = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        pause.wait(0.01)
    return condition()


def test_second_comer_fails_at_once_naming_the_holder() -> None:
    clock = ManualClock()
    first = take("run-a", clock)
    clock.advance(7)
    with pytest.raises(ClusterBusy) as busy:
        lease.acquire("lab", "upgrade", "run-b", clock=clock, heartbeat=False)
    message = str(busy.value)
    for part in ("lab: busy with deploy", "run run-a", f"pid {os.getpid()}",
                 f"on {socket.gethostname()}", "since 2023-11-14 22:13:20Z",
                 "last heartbeat 7s ago"):
        assert part in message
    assert busy.value.holder == first.info  # type: ignore[attr-defined]
    first.release()


def test_release_frees_the_cluster_and_with_block_releases() -> None:
    clock = ManualClock()
    with take("run-a", clock):
        assert lease.holder("lab", clock).owner == "run-a"  # type: ignore[union-attr]
    assert lease.holder("lab", clock) is None
    take("run-b", clock).release()


def test_other_clusters_are_independent() -> None:
    clock = ManualClock()
    with take("run-a", clock), lease.acquire("other", "deploy", "run-b", clock=clock,
                                             heartbeat=False):
        assert lease.holder("other", clock).owner == "run-b"  # type: ignore[union-attr]


@pytest.mark.parametrize(("silent_for", "taken_over"), [(59, False), (60, True), (600, True)])
def test_holder_silent_past_ttl_is_taken_over(silent_for: float, taken_over: bool) -> None:
    clock = ManualClock()
    first = take("run-a", clock, ttl=60)
    clock.advance(silent_for)
    if not taken_over:
        with pytest.raises(ClusterBusy):
            take("run-b", clock)
        return
    second = take("run-b", clock)
    assert lease.holder("lab", clock).owner == "run-b"  # type: ignore[union-attr]
    assert first.beat() is False and first.lost
    with pytest.raises(ClusterBusy, match="lease of deploy .run run-a. was lost.*run run-b"):
        first.check()
    first.release()  # must not free the new holder's lease
    assert lease.holder("lab", clock).owner == "run-b"  # type: ignore[union-attr]
    second.release()


def test_heartbeat_pushes_the_expiry_out() -> None:
    clock = ManualClock()
    first = take("run-a", clock, ttl=60)
    for _ in range(5):
        clock.advance(50)
        assert first.beat()
    with pytest.raises(ClusterBusy, match="last heartbeat 0s ago"):
        take("run-b", clock)
    first.release()


def test_leaving_the_block_with_a_lost_lease_raises() -> None:
    clock = ManualClock()
    first = take("run-a", clock, ttl=60)
    with pytest.raises(ClusterBusy, match="was lost"), first:
        clock.advance(61)
        take("run-b", clock)
        first.beat()


def test_waiting_comer_gets_the_cluster_when_the_holder_releases() -> None:
    first = take("run-a", ManualClock())
    seen = []

    class ReleasingClock(ManualClock):
        """The holder finishes while the second comer waits for its first poll."""

        def sleep_until(self, moment: float) -> None:
            first.release()
            super().sleep_until(moment)

    clock = ReleasingClock()
    second = lease.acquire("lab", "upgrade", "run-b", if_busy="wait", wait_seconds=600,
                           clock=clock, heartbeat=False, on_wait=seen.append)
    assert [info.owner for info in seen] == ["run-a"]
    assert clock.now() - 1_700_000_000 == pytest.approx(1.0)  # one poll, not the whole wait
    second.release()


def test_waiting_gives_up_after_wait_seconds_naming_the_holder() -> None:
    clock = ManualClock()
    first = take("run-a", clock, ttl=600)
    with pytest.raises(ClusterBusy, match=r"busy with deploy .run run-a.*\(waited 30s\)"):
        take("run-b", clock, if_busy="wait", wait_seconds=30)
    assert clock.now() - 1_700_000_000 == pytest.approx(30)
    first.release()


def test_waiting_takes_over_a_holder_that_stops_beating() -> None:
    clock = ManualClock()
    take("run-a", clock, ttl=60)
    second = take("run-b", clock, if_busy="wait", wait_seconds=600, poll_seconds=5)
    assert clock.now() - 1_700_000_000 == pytest.approx(60)
    assert second.info.owner == "run-b"
    second.release()


def test_if_busy_must_be_fail_or_wait() -> None:
    with pytest.raises(ValueError, match="if_busy: 'retry'"):
        take("run-a", ManualClock(), if_busy="retry")


def test_heartbeat_thread_beats_and_stops_on_release() -> None:
    clock = ManualClock()
    held = lease.acquire("lab", "deploy", "run-a", ttl=0.06, clock=clock)
    clock.advance(1000)
    assert until(lambda: lease.holder("lab", clock) is not None), "no heartbeat came"
    thread = held._thread
    held.release()
    assert thread is not None and not thread.is_alive()
    assert lease.holder("lab", clock) is None


def test_heartbeat_thread_notices_a_takeover() -> None:
    clock = ManualClock()
    held = lease.acquire("lab", "deploy", "run-a", ttl=0.06, clock=clock)
    held._stop.set()  # silence it, so the takeover below cannot lose the race
    held._thread.join()  # type: ignore[union-attr]
    clock.advance(1)
    second = take("run-b", clock)
    held._stop.clear()
    held.start_heartbeat()
    assert until(lambda: held.lost), "the heartbeat never noticed"
    assert held.taken_by is not None and held.taken_by.owner == "run-b"
    second.release()


def test_threads_contending_get_exactly_one_lease() -> None:
    start, results = threading.Barrier(8), []

    def contend(index: int) -> None:
        start.wait()
        try:
            results.append(lease.acquire("lab", "deploy", f"run-{index}", heartbeat=False))
        except ClusterBusy:
            results.append(None)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 8 and len(winners) == 1
    assert lease.holder("lab").owner == winners[0].info.owner  # type: ignore[union-attr]


def test_processes_contending_get_exactly_one_lease() -> None:
    children = [start_holder(f"p{i}") for i in range(4)]
    answers = [child.stdout.readline().split()[0] for child in children]  # type: ignore[union-attr]
    for child in children:
        child.communicate("\n", timeout=30)
    assert sorted(answers) == ["busy", "busy", "busy", "held"]


def test_busy_message_names_a_holder_in_another_process() -> None:
    child = start_holder("child")
    assert child.stdout.readline() == "held\n"  # type: ignore[union-attr]
    with pytest.raises(ClusterBusy, match=f"run run-child, pid {child.pid} on "):
        lease.acquire("lab", "replace", "run-me", heartbeat=False)
    child.communicate("\n", timeout=30)


def test_sigkilled_holder_is_taken_over_at_once() -> None:
    child = start_holder("killed", ttl=3600)
    assert child.stdout.readline() == "held\n"  # type: ignore[union-attr]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    taken = lease.acquire("lab", "deploy", "run-next", heartbeat=False)
    assert lease.holder("lab").owner == "run-next"  # type: ignore[union-attr]
    taken.release()


def test_zombie_holder_counts_as_gone() -> None:
    child = start_holder("zombie", ttl=3600)
    assert child.stdout.readline() == "held\n"  # type: ignore[union-attr]
    os.kill(child.pid, signal.SIGKILL)
    assert until(lambda: not lease.process_alive(child.pid)), "killed child still alive"
    lease.acquire("lab", "deploy", "run-next", heartbeat=False).release()
    child.wait(timeout=30)


def test_waiter_in_this_process_gets_the_lease_a_child_releases() -> None:
    child = start_holder("child")
    assert child.stdout.readline() == "held\n"  # type: ignore[union-attr]
    got: list[lease.Lease] = []

    def release_child(holder: lease.LeaseInfo) -> None:
        assert holder.pid == child.pid
        child.stdin.write("\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]

    def wait_for_lease() -> None:
        got.append(lease.acquire("lab", "upgrade", "run-me", if_busy="wait", wait_seconds=60,
                                 poll_seconds=0.02, clock=SystemClock(), heartbeat=False,
                                 on_wait=release_child))

    waiter = threading.Thread(target=wait_for_lease)
    waiter.start()
    waiter.join(timeout=60)
    assert child.stdout.readline() == "released\n"  # type: ignore[union-attr]
    assert got and got[0].info.owner == "run-me"
    got[0].release()
    child.wait(timeout=30)


def test_operations_database_is_private(isolated_home: Path) -> None:
    lease.acquire("lab", "deploy", "run-a", heartbeat=False).release()
    mode = stat.S_IMODE((isolated_home / "operations.db").stat().st_mode)
    assert mode == 0o600
