"""The chaos soak: seeded fault schedules over deploy → upgrade → heal → replace → destroy on
the lab under a manual clock, with invariants checked after every attempt.

A schedule is drawn from one seed: the cluster's shape, faults declared in its config
(create failures, Talos API errors, a node that never boots, a node that dies, failed
upgrades, blocked drains), and for each step whether drover is killed at a random call
(SIGKILL: no clean-up, the lease left to expire) and whether another operation tries the
same cluster half-way (it must be refused without touching anything). The operator re-runs
a failed step, recovers etcd when told to, and replaces dead nodes. The operations are the
library steps the flows chain (drover/deploy.py, upgrade.py, replace.py, recover.py), under
the same lease; they run without Prefect so a thousand schedules take minutes.

    python -m tests.chaos.soak --schedules 1000 [--seed N]    (make soak)

A violation prints the seed that replays it: `python -m tests.chaos.soak --only SEED`.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover import deploy, health, lease, recover, replace, upgrade
from drover.errors import ClusterBusy, DroverError, TransientError
from drover.home import forget_cluster
from drover.lab.clock import ManualClock
from drover.lab.datacenter import Datacenter
from drover.machineconfig import secrets as secrets_module
from drover.machineconfig.secrets import generate_secrets
from drover.plan import plan_deploy, plan_upgrade, refuse_downgrade
from drover.spec import ClusterSpec, parse_spec
from tests.chaos.invariants import Tracker

OLD, NEW = "v1.13.9", "v1.14.0"
TTL = 60.0
ATTEMPTS = 6
PERMANENT = ("never-boots", "dies", "drain-blocked")


class Killed(BaseException):
    """drover's process died here (kill -9): no except clause, no finally of ours runs."""


@dataclass
class Step:
    op: str
    kill_at: int | None = None       # the call (provider, Talos, Kubernetes) that dies
    overlap_at: int | None = None    # the call at which another operation tries the cluster
    overlap_op: str = "deploy"
    pick: float = 0.0                # which node a replace step replaces (fraction of the list)


@dataclass
class Schedule:
    seed: int
    spec: ClusterSpec
    steps: list[Step]
    faults: list[dict[str, Any]]

    @property
    def permanent(self) -> bool:
        return any(f["type"] in PERMANENT for f in self.faults)


def draw(seed: int) -> Schedule:
    rng = random.Random(seed)
    cps, workers = rng.choice([1, 3, 3, 3, 5]), rng.randint(1, 4)
    nodes = [f"s-cp-{i}" for i in range(1, cps + 1)] + \
            [f"s-worker-{i}" for i in range(1, workers + 1)]
    faults = []
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        kind = rng.choice(["create-fails", "talos-api-errors", "upgrade-fails", "never-boots",
                           "dies", "drain-blocked"])
        if any(f["type"] in PERMANENT for f in faults) and kind in PERMANENT:
            continue  # one permanent fault a schedule keeps each failure explainable
        fault = {"type": kind, "node": rng.choice(nodes), "times": rng.randint(1, 2)}
        if kind == "dies":
            fault["afterSeconds"] = rng.choice([0, 30, 600, 5000])
        faults.append(fault)
    spec = parse_spec({
        "apiVersion": "drover/v1alpha1", "kind": "Cluster", "metadata": {"name": "s"},
        "spec": {
            "talos": {"version": OLD}, "kubernetes": {"version": "1.36.3",
                                                       "endpoint": "https://10.5.0.2:6443"},
            "controlPlane": {"count": cps}, "workers": [{"name": "worker", "count": workers}],
            "provider": {"kind": "lab", "profile": rng.choice(["instant", "demo"]),
                         "seed": seed, "faults": faults},
            "upgrade": {"maxUnavailable": rng.randint(1, 2), "drainTimeoutSeconds": 60},
            "deployment": {"timeouts": {"provisionSeconds": 300, "configureSeconds": 600,
                                        "healthSeconds": 600}},
        }}, source=f"seed {seed}")
    steps = [Step(op) for op in ("deploy", "upgrade", "heal", "replace", "destroy")]
    for step in steps:
        step.pick = rng.random()
        if rng.random() < 0.35:
            step.kill_at = rng.randint(1, 80)
        if rng.random() < 0.35:
            step.overlap_at = rng.randint(1, 40)
            step.overlap_op = rng.choice(["deploy", "upgrade", "replace", "destroy"])
    if rng.random() < 0.3:
        # the operator kills a destroy half-way, then wants the cluster back after all:
        # a deploy, told etcd lost quorum, a recovery from the snapshot, the deploy again
        steps[-1].kill_at = rng.randint(2, 12)
        steps += [Step("deploy", pick=rng.random()), Step("destroy")]
    return Schedule(seed, spec, steps, faults)


class Chaos:
    """Counts calls into the infrastructure; kills the process or starts an overlapping
    operation at the numbered call."""

    def __init__(self) -> None:
        self.calls = 0
        self.kill_at: int | None = None
        self.overlap_at: int | None = None
        self.overlap: Callable[[], None] = lambda: None
        self.beat: Callable[[], None] = lambda: None   # the heartbeat of a live holder
        self.quiet = False

    def wrap(self, target: Any) -> Any:
        chaos = self

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                value = getattr(target, name)
                if not callable(value) or name.startswith("_"):
                    return value

                def call(*args: Any, **kwargs: Any) -> Any:
                    chaos.tick()
                    return value(*args, **kwargs)
                return call
        return Proxy()

    def tick(self) -> None:
        if self.quiet:
            return
        self.calls += 1
        self.beat()  # a live process's heartbeat thread keeps its lease while time passes
        if self.calls == self.overlap_at:
            self.quiet = True
            try:
                self.overlap()
            finally:
                self.quiet = False
        if self.calls == self.kill_at:
            raise Killed(f"killed at call {self.calls}")


@dataclass
class World:
    schedule: Schedule
    clock: ManualClock
    lab: Datacenter
    chaos: Chaos
    tracker: Tracker
    violations: list[str] = field(default_factory=list)
    runs: int = 0
    deployed: bool = False   # a deploy finished and no destroy since
    step: Step = field(default_factory=lambda: Step("deploy"))
    target: str | None = None  # the node the current replace step replaces

    @property
    def spec(self) -> ClusterSpec:
        return self.schedule.spec

    def infra(self) -> deploy.Infra:
        base = deploy.Infra.on_lab(self.spec, self.lab)
        return deploy.Infra(self.spec, self.chaos.wrap(base.provider),
                            self.chaos.wrap(base.talos), self.chaos.wrap(base.kube))

    def owner(self) -> str:
        self.runs += 1
        return f"soak-run-{self.runs}"


# ---- the operations, as the flows chain them ------------------------------------------
def retried(world: World, step: Callable[..., Any], *args: Any) -> Any:
    """A step under the flows' task retries: again on a TransientError, `retries` times."""
    for left in range(world.spec.spec.deployment.retries, -1, -1):
        try:
            return step(*args)
        except TransientError:
            if not left:
                raise
    return None


def op_deploy(world: World, infra: deploy.Infra, owner: str) -> None:
    observed = deploy.observe(infra)
    plan = plan_deploy(world.spec, observed)
    deploy.prepare_cluster_dir(world.spec, nodes_exist=not observed.empty)
    try:
        image = deploy.resolve_image(infra)
        for node in plan.create:
            retried(world, deploy.provision_node, infra, node, image, owner)
        for node in plan.configure:
            retried(world, deploy.configure_node, infra, node)
        if plan.bootstrap:
            retried(world, deploy.bootstrap_etcd, infra)
        deploy.wait_healthy(infra)
        deploy.write_client_configs(infra)
    except Exception:
        if plan.fresh:
            deploy.clean_up_failed(infra, owner)
        raise


def snapshot(infra: deploy.Infra) -> None:
    if recover.snapshot_source(infra) is not None:
        recover.snapshot_etcd(infra)


def op_upgrade(world: World, infra: deploy.Infra, owner: str) -> None:
    observed = deploy.observe(infra)
    kubernetes = world.spec.spec.kubernetes.version
    refuse_downgrade(world.spec.name, observed, NEW, kubernetes)
    plan = plan_upgrade(observed, NEW, kubernetes, world.spec.spec.upgrade.max_unavailable)
    if plan.empty:
        return
    if plan.not_running:
        raise DroverError(f"upgrade pre-flight: {plan.not_running} not running")
    snapshot(infra)
    for name in plan.uncordon:
        infra.kube.set_cordoned(name, False)
    image = upgrade.installer_for(infra, NEW)
    for batch in plan.batches:
        for name in batch:
            retried(world, upgrade.upgrade_node, infra, name, image, NEW)


def op_replace(world: World, infra: deploy.Infra, owner: str, node: str | None = None) -> None:
    """Replace one node; the operator names the same node on every attempt of the step."""
    if node is None:
        if world.target is None:
            nodes = sorted(deploy.observe(infra).nodes)
            if not nodes:
                return
            world.target = nodes[int(world.step.pick * len(nodes))]
        node = world.target
    if node not in deploy.observe(infra).nodes:
        return  # replaced already, by an attempt killed after it deleted the old node
    plan = replace.plan(infra, node)
    snapshot(infra)
    replace.retire(infra, plan)
    retried(world, replace.bring_up, infra, plan.new, plan.control_plane, owner)
    deploy.destroy(infra, [node])


def op_heal(world: World, infra: deploy.Infra, owner: str) -> None:
    """What check-health and its automation do: replace dead nodes, one at a time."""
    for node in health.check(infra).unhealthy:
        if node.talos_api is False and infra.provider.get_node(node.node).state == "dead":
            op_replace(world, infra, owner, node.node)


def op_destroy(world: World, infra: deploy.Infra, owner: str) -> None:
    snapshot(infra)
    deploy.destroy(infra)
    forget_cluster(world.spec.name)


def op_recover(world: World, infra: deploy.Infra, owner: str) -> None:
    recover.perform_recovery(infra, recover.plan_recovery(infra))


OPS: dict[str, Callable[..., None]] = {
    "deploy": op_deploy, "upgrade": op_upgrade, "heal": op_heal, "replace": op_replace,
    "destroy": op_destroy, "recover": op_recover}


def run_op(world: World, op: str) -> None:
    """One run of `op` under the cluster's lease; Killed leaves the lease to expire."""
    owner = world.owner()
    held = lease.acquire(world.spec.name, op, owner, clock=world.clock, ttl=TTL,
                         heartbeat=False)
    world.chaos.beat = held.beat
    try:
        OPS[op](world, world.infra(), owner)
    except Exception:
        held.release()  # a failed run ends; a Killed one (BaseException) keeps it, as on SIGKILL
        raise
    finally:
        world.chaos.beat = lambda: None
    held.check()  # a run that lost its lease half-way must not report success
    held.release()


def overlap(world: World, op: str) -> Callable[[], None]:
    def attempt() -> None:
        before = world.tracker.snapshot(world)
        try:
            run_op(world, op)
        except ClusterBusy:
            pass
        else:
            world.violations.append(f"an overlapping {op} was let in while the cluster was held")
        if world.tracker.snapshot(world) != before:
            world.violations.append(f"an overlapping {op} changed the cluster")
    return attempt


def attempt(world: World, step: Step, first: bool) -> str | None:
    """One attempt of a step; the outcome: None (done), 'killed', or the error's text."""
    world.chaos.calls = 0
    world.chaos.kill_at = step.kill_at if first else None
    world.chaos.overlap_at = step.overlap_at if first else None
    world.chaos.overlap = overlap(world, step.overlap_op)
    window = world.tracker.begin(world, step.op)
    try:
        run_op(world, step.op)
        outcome = None
    except Killed:
        outcome = "killed"
    except ClusterBusy as exc:
        world.violations.append(f"{step.op} found the cluster busy with no other run: {exc}")
        outcome = str(exc)
    except DroverError as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    except Exception:  # not a drover error: a crash the operator cannot act on
        world.violations.append(f"{step.op} crashed: {traceback.format_exc(limit=6)}")
        outcome = "crash"
    world.tracker.check(world, window, step.op, outcome)
    if outcome is None and step.op in ("deploy", "destroy"):
        world.deployed = step.op == "deploy"
    if outcome is not None:
        world.clock.advance(TTL + 1)  # the operator comes back after the lease expired
    return outcome


@functools.cache
def one_bundle() -> Any:
    return generate_secrets()


def play(seed: int) -> list[str]:
    """Run one schedule in a fresh $DROVER_HOME; the invariant violations (empty: passed).

    Every schedule's cluster gets the same generated secrets (an RSA-4096 key takes a third
    of a second): what is checked is that drover never makes them again, not their values.
    """
    schedule = draw(seed)
    secrets_module.generate_secrets = one_bundle
    with tempfile.TemporaryDirectory(prefix="drover-soak-") as home:
        os.environ["DROVER_HOME"] = home
        clock = ManualClock()
        world = World(schedule, clock, Datacenter(schedule.spec, Path(home) / "lab.db", clock),
                      Chaos(), Tracker(schedule.spec))
        for step in schedule.steps:
            world.step, world.target, outcome = step, None, None
            for n in range(ATTEMPTS):
                outcome = attempt(world, step, first=n == 0)
                if outcome and "drover recover" in outcome:
                    attempt(world, Step("recover"), first=False)
                elif outcome and "not running" in outcome and step.op != "heal":
                    attempt(world, Step("heal"), first=False)  # replace the dead, then again
                if outcome is None or world.violations:
                    break
            if world.violations:
                break
            refused = outcome is not None and outcome.startswith("QuorumError") \
                and step.op == "replace"  # a safety refusal: e.g. the only control plane
            if outcome is not None and not schedule.permanent and not refused \
                    and (world.deployed or step.op == "deploy"):
                world.violations.append(f"{step.op} did not converge in {ATTEMPTS} attempts "
                                        f"with only transient faults: {outcome}")
                break
        world.tracker.final(world)
        return [f"seed {seed}: {v}" for v in world.violations]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--only", type=int, help="replay this one seed")
    args = parser.parse_args(argv)
    seeds = [args.only] if args.only is not None else \
        list(range(args.seed, args.seed + args.schedules))
    started, failed = time.monotonic(), []
    for i, seed in enumerate(seeds, 1):
        failed += play(seed)
        if i % 100 == 0:
            print(f"{i} schedules, {len(failed)} violation(s), "
                  f"{time.monotonic() - started:.0f}s", flush=True)
    for line in failed:
        print(line)
    print(f"soak: {len(seeds)} schedules, {len(failed)} invariant violation(s) in "
          f"{time.monotonic() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
