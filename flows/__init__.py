"""Prefect flows: each file one flow that reads as an ordered list of task calls. Here, what
they share: running tasks in parallel or as per-node pipelines (each step marked on the run's
progress board), the run's tracker (stage timer, board, progress artifact), and the cluster
a run names."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from drover import progress
from drover.boundaries import cluster_name
from drover.clock import Clock, Ticket, current_clock
from drover.deploy import Infra
from drover.errors import NodeNotFound
from drover.home import drover_home, known_clusters, remembered_spec
from drover.spec import ClusterSpec
from drover.timing import History, RunTiming, StageTimer, StageTiming, targets_for
from tasks.progress import ProgressArtifact

#: the progress stage the node steps started here count in (set by RunTracker.stage)
_board_stage: ContextVar[str | None] = ContextVar("drover_board_stage", default=None)


def _ended(future: PrefectFuture[Any]) -> bool:
    """Whether the work behind a future returned (its Prefect state may still be settling)."""
    wrapped = getattr(future, "wrapped_future", None)
    return wrapped is not None and wrapped.done()


def next_done(clock: Clock, pending: dict[PrefectFuture[Any], Ticket]) -> PrefectFuture[Any]:
    """The next future to end, waited for through the clock. Under exact virtual time the
    future whose ticket closed is taken while this thread holds time: Prefect settles its
    state a moment after the work returned, and waiting for that as blocked would let time
    jump past the moment the next task should start."""
    closed = clock.wait_for(list(pending.values()), first=True)
    for future, ticket in pending.items():
        if ticket in closed and _ended(future):
            future.wait()
            return future
    with clock.blocked():
        return next(as_completed(list(pending)))


def gather(futures: dict[str, PrefectFuture[Any]],
           tickets: dict[str, Ticket] | None = None) -> dict[str, Any]:
    """Wait for every future, then return their results or raise the first failure.

    Every future is resolved with .result() (never only .wait()), so a failed
    task fails the flow; all of them finish first, so nothing runs on unseen. With the
    futures' `tickets` (clock.expect), this thread waits through the clock, so virtual time
    moves only while every task waits.
    """
    clock = current_clock()
    clock.wait_for(list((tickets or {}).values()))
    ended = all(_ended(future) for future in futures.values())
    with nullcontext() if ended else clock.blocked():
        wait(list(futures.values()))
    results, errors = {}, []
    for name, future in futures.items():
        try:
            results[name] = future.result()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    return results


def run_parallel(task: Task[..., Any], calls: dict[str, dict[str, Any]], max_workers: int, *,
                 stop_on_failure: bool = False, before_start: Callable[[], None] | None = None,
                 on_result: Callable[[str, Any], None] | None = None,
                 stage: str | None = None) -> dict[str, Any]:
    """Run `task` once per named set of parameters, at most `max_workers` at a time: a
    sliding window, the next run starting the moment any one ends (never batch by batch).

    Results come back by name, or the first failure is raised once every started run has
    finished. `stop_on_failure`: after a failure nothing new starts (a rolling upgrade
    stops at its first failed node). `before_start` is called before each run starts (a
    lease check: what it raises counts as a failure); `on_result(name, result)` after each
    run that succeeded, in the order they ended. Under an exact virtual clock each run is
    announced when it is submitted and this thread waits through the clock; runs waiting
    for a slot are not announced (they could not start without time passing). Each run is
    marked on the run's progress board as a node in `stage` (default: the tracker's stage).
    """
    clock = current_clock()
    label = stage or _board_stage.get()
    queue: deque[str] = deque(calls)
    results: dict[str, Any] = {}
    errors: list[Exception] = []
    pending: dict[PrefectFuture[Any], tuple[str, Ticket]] = {}
    with ThreadPoolTaskRunner(max_workers=max_workers) as runner:

        def fill() -> None:
            while queue and len(pending) < max_workers and not (errors and stop_on_failure):
                try:
                    if before_start is not None:
                        before_start()
                except Exception as exc:  # nothing more may start
                    errors.append(exc)
                    queue.clear()
                    return
                name = queue.popleft()
                mark(name, label, "running")
                ticket = clock.expect(name)
                with ticket.carried():
                    future = runner.submit(task, parameters=calls[name])
                future.add_done_callback(ticket.close)
                pending[future] = (name, ticket)

        fill()
        while pending:
            done = next_done(clock, {future: ticket for future, (_, ticket) in pending.items()})
            name, _ = pending.pop(done)
            try:
                results[name] = done.result()
            except Exception as exc:
                errors.append(exc)
                mark(name, label, "failed")
            else:
                mark(name, label, "done")
                if on_result is not None:
                    on_result(name, results[name])
            fill()
    if errors:
        raise errors[0]
    return {name: results[name] for name in calls if name in results}


def mark(node: str, stage: str | None, state: progress.State) -> None:
    """Mark `node` in `stage` on the current run's progress board, if there is one."""
    board = progress.current()
    if board is not None and stage:
        board.node(node, stage, state)


@dataclass(frozen=True)
class Step:
    """One step of a node's pipeline: a task and its parameters. A step with `once` set runs
    for the first node that reaches it only (etcd's bootstrap); later nodes go past it."""

    name: str
    task: Task[..., Any]
    parameters: dict[str, Any]
    once: str | None = None


def run_pipelines(chains: dict[str, list[Step]], max_workers: int) -> dict[str, dict[str, Any]]:
    """Run each node's chain of steps on its own, at most `max_workers` tasks at a time.

    A node's next step is submitted the moment its previous one ends, so no node waits for
    another (no stage barrier); nodes ready for a step queue for a free slot in order. After
    the first failure nothing new starts; what runs is let finish, then the failure is
    raised. Returns {node: {step: result}}.

    Under an exact virtual clock (drover.clock.use_clock) every task is announced before it
    is submitted and this thread waits through the clock, so virtual time moves only when
    every task of the run waits (no jump between a submit and a task's first step).
    """
    clock = current_clock()
    results: dict[str, dict[str, Any]] = {node: {} for node in chains}
    position = dict.fromkeys(chains, 0)
    ready: deque[str] = deque(chains)
    taken: set[str] = set()
    pending: dict[PrefectFuture[Any], tuple[str, str, Ticket]] = {}
    errors: list[Exception] = []
    with ThreadPoolTaskRunner(max_workers=max_workers) as runner:

        def next_step(node: str) -> Step | None:
            chain = chains[node]
            while position[node] < len(chain):
                step = chain[position[node]]
                position[node] += 1
                if step.once is None:
                    return step
                if step.once not in taken:
                    taken.add(step.once)
                    return step
            return None

        def fill() -> None:
            while ready and len(pending) < max_workers and not errors:
                node = ready.popleft()
                step = next_step(node)
                if step is None:
                    continue
                mark(node, step.name, "running")
                ticket = clock.expect(f"{node}/{step.name}")
                with ticket.carried():
                    future = runner.submit(step.task, parameters=step.parameters)
                future.add_done_callback(ticket.close)
                pending[future] = (node, step.name, ticket)

        fill()
        while pending:
            done = next_done(clock, {future: ticket for future, (_, _, ticket) in pending.items()})
            node, name, _ = pending.pop(done)
            try:
                results[node][name] = done.result()
            except Exception as exc:
                errors.append(exc)
                mark(node, name, "failed")
            else:
                mark(node, name, "done")
                ready.append(node)
            fill()
    if errors:
        raise errors[0]
    return results


def known_spec(cluster: str) -> ClusterSpec:
    """The spec drover deployed `cluster` with, or a clear error naming the clusters it knows
    and the fix; the name is checked first (a flow parameter, an event's payload: anything
    may arrive here)."""
    spec = remembered_spec(cluster_name(cluster))
    if spec is None:
        raise NodeNotFound(f"{cluster}: drover knows no such cluster in $DROVER_HOME "
                           f"({known_list()}); deploy it first (drover deploy CONFIG)")
    return spec


def known_list() -> str:
    """The clusters drover knows, for a message: 'it knows: a, b' or 'it knows none'."""
    names = known_clusters()
    return f"it knows: {', '.join(names)}" if names else "it knows none"


class RunTracker:
    """A run's stage timer and progress board together: `stage` times a stage and marks it on
    the board (the node steps run inside it count as that stage's), `finish` ends both and
    posts the progress artifact's final state."""

    def __init__(self, timer: StageTimer, board: progress.RunProgress,
                 artifact: ProgressArtifact) -> None:
        self.timer, self.board, self.artifact = timer, board, artifact
        self.run: RunTiming = timer.run
        self.clock = timer.clock

    @contextmanager
    def stage(self, name: str, nodes: list[str] | None = None) -> Iterator[StageTiming]:
        """Time stage `name`; on the board it is `name`'s first word ("upgrade lab-cp-1" is a
        batch of the upgrade stage, whose nodes run_parallel marks). `nodes` (a stage about
        these nodes), else a whole stage, is marked running, then done or failed."""
        label = name.split()[0]
        token = _board_stage.set(label)

        def show(state: progress.State) -> None:
            if nodes:
                for node in nodes:
                    self.board.node(node, label, state)
            elif label == name:
                self.board.stage(label, state)

        show("running")
        try:
            with self.timer.stage(name) as timing:
                yield timing
        except BaseException:
            show("failed")
            raise
        else:
            show("done")
        finally:
            _board_stage.reset(token)

    def nodes(self, stage: StageTiming, per_node: dict[str, float]) -> None:
        self.timer.nodes(stage, per_node)

    def pipelines(self, spans: dict[str, dict[str, tuple[float, float]]],
                  order: list[str]) -> None:
        self.timer.pipelines(spans, order)

    def finish(self, outcome: str) -> RunTiming:
        run = self.timer.finish(outcome)
        self.board.finish(outcome)
        self.artifact.close()
        return run


def start_timer(spec: ClusterSpec, flow_name: str,
                stages: Mapping[str, list[str] | None] | None = None) -> RunTracker:
    """The run's tracker, on the clock of the cluster's infrastructure: the run is in the
    history from its start, so a run killed on the way still leaves a record, and its
    progress board (`stages` in order: a node list for a stage each node goes through, None
    for the cluster's own) is current and published as `<flow>-<cluster>-progress`."""
    provider = Infra.open(spec).provider
    scale, note = provider.timing_scale()
    stages = stages or {}
    run = RunTiming(spec.name, flow_name, provider.clock.now(), run_id=str(flow_run.id),
                    scale=scale, clock_note=note)
    # each flow against its own target and baseline; an upgrade's scale with its nodes
    run.judge(targets_for(spec, flow_name, len(stages.get("upgrade") or [])))
    History(drover_home() / "history.db").begin(run)
    nodes = list(dict.fromkeys(n for names in stages.values() for n in names or []))
    board = progress.begin(spec.name, flow_name, provider.clock, nodes, list(stages),
                           plan={s: n for s, n in stages.items() if n}, scale=scale)
    progress.activate(board)
    return RunTracker(StageTimer(run, provider.clock), board, ProgressArtifact(board))
