"""drover.upgrade and drover.replace: the day-2 steps end to end, without Prefect, on one lab
and a ManualClock (every wait jumps to the lab's next change, so nothing sleeps)."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from drover import replace
from drover.deploy import Infra, destroy, observe
from drover.errors import QuorumError, StageTimeout, UpgradeFailed
from drover.files import write_private
from drover.home import cluster_dir
from drover.kube import LabKube
from drover.lab.clock import ManualClock
from drover.lab.datacenter import Datacenter
from drover.machineconfig import generate_secrets, to_yaml
from drover.plan import plan_deploy
from drover.providers.base import Node
from drover.providers.lab import LabProvider
from drover.spec import ClusterSpec
from drover.talos import MachineStatus
from drover.talos.lab import LabTalos
from drover.upgrade import check_etcd, installer_for, upgrade_node
from tests.unit.conftest import build_spec
from tests.unit.test_deploy_steps import deploy, lab_of

OLD, NEW = "v1.13.9", "v1.14.0"


@functools.cache
def secrets_yaml() -> str:
    """One secrets bundle for the session: its 4096-bit RSA key takes a while to generate."""
    return to_yaml(generate_secrets())


def lab_infra(spec: ClusterSpec, dc: Datacenter, talos: LabTalos | None = None) -> Infra:
    """Provider, Talos API and Kubernetes all on one lab; the cluster's secrets on disk."""
    write_private(cluster_dir(spec.name) / "secrets.yaml", secrets_yaml())
    return Infra(spec, LabProvider(spec, dc), talos or LabTalos(spec, dc), LabKube(spec, dc))


@pytest.fixture(scope="session")
def deployed_labs(tmp_path_factory):
    """shape -> (lab file, its clock's time): each cluster shape deployed once a session."""
    made: dict[tuple[int, int], tuple[Path, float]] = {}

    def deployed_lab(control_planes: int, workers: int) -> tuple[Path, float]:
        if (control_planes, workers) not in made:
            folder = tmp_path_factory.mktemp(f"lab-{control_planes}-{workers}")
            with pytest.MonkeyPatch.context() as env:
                env.setenv("DROVER_HOME", str(folder))
                spec = build_spec(control_planes=control_planes, workers=workers)
                dc = Datacenter(spec, folder / "lab.db", ManualClock())
                deploy(lab_infra(spec, dc))
            made[control_planes, workers] = (folder / "lab.db", dc.clock.now())
        return made[control_planes, workers]
    return deployed_lab


@pytest.fixture
def deployed(make_spec, lab, deployed_labs, tmp_path):
    """deployed(control_planes=3, workers=1, faults=[...]) -> Infra: a healthy cluster.

    Deployed by the library steps once per shape, then copied for each test. Faults are
    read from the spec when the lab opens, so upgrade and drain faults arm on the copy.
    """
    def build(talos: type[LabTalos] = LabTalos, control_planes: int = 3, workers: int = 1,
              faults: Sequence[dict[str, object]] = ()) -> Infra:
        spec = make_spec(control_planes=control_planes, workers=workers, faults=faults)
        source, now = deployed_labs(control_planes, workers)
        for suffix in ("", "-wal"):  # the WAL is folded in once the last connection closes
            if Path(f"{source}{suffix}").exists():
                shutil.copy(f"{source}{suffix}", tmp_path / f"lab.db{suffix}")
        dc = lab(spec, ManualClock(now))
        return lab_infra(spec, dc, talos(spec, dc))
    return build


def events_since(infra: Infra, since: int, node: str | None = None) -> list[str]:
    return [what for _, name, what in lab_of(infra).events()[since:]
            if node is None or name == node]


def member_ids(infra: Infra) -> dict[str, str]:
    return {m.node: m.member_id for m in infra.talos.cluster_health().members}


class WatchingTalos(LabTalos):
    """The lab's Talos API, sampling etcd on every status read a wait makes.

    Not a fake: every answer comes from the lab; the samples show what a wait saw.
    """

    def __init__(self, spec: ClusterSpec, datacenter: Datacenter) -> None:
        super().__init__(spec, datacenter)
        self.samples: list[tuple[str, str, int, bool]] = []

    def machine_status(self, node: Node) -> MachineStatus:
        status = super().machine_status(node)
        health = super().cluster_health()
        self.samples.append((node.name, status.stage, health.healthy_members(), health.api_up))
        return status


# ---- upgrade_node ----------------------------------------------------------------------

def test_upgrading_a_control_plane_keeps_two_healthy_members_while_it_is_down(deployed):
    infra = deployed(talos=WatchingTalos)
    talos: WatchingTalos = infra.talos  # type: ignore[assignment]
    members = member_ids(infra)
    mark = len(lab_of(infra).events())
    started = infra.clock.now()
    talos.samples.clear()

    seconds = upgrade_node(infra, "lab-cp-2", installer_for(infra, NEW), NEW)

    down = [s for s in talos.samples if s[0] == "lab-cp-2" and s[1] != "running"]
    assert {stage for _, stage, _, _ in down} == {"upgrading", "rebooting"}
    assert {(healthy, api) for _, _, healthy, api in down} == {(2, True)}
    assert min(healthy for _, _, healthy, _ in talos.samples) == 2
    node = lab_of(infra).node("lab-cp-2")
    assert (node.talos_version, node.ready, node.cordoned) == (NEW, True, False)
    assert member_ids(infra) == members  # the same member came back, data kept
    assert infra.talos.cluster_health().healthy_members() == 3
    assert seconds == infra.clock.now() - started > 0
    assert events_since(infra, mark, "lab-cp-2") == [
        "cordoned", "drained", "upgrading", "rebooting", "running", f"upgraded to {NEW}",
        "ready", "uncordoned"]
    assert events_since(infra, mark) == events_since(infra, mark, "lab-cp-2")  # nobody else


def test_upgrading_a_worker_leaves_etcd_alone(deployed):
    infra = deployed()
    members = member_ids(infra)
    mark = len(lab_of(infra).events())

    upgrade_node(infra, "lab-worker-1", installer_for(infra, NEW), NEW)

    assert {n.name: n.talos_version for n in lab_of(infra).nodes()} == {
        "lab-cp-1": OLD, "lab-cp-2": OLD, "lab-cp-3": OLD, "lab-worker-1": NEW}
    assert member_ids(infra) == members
    assert not any("etcd" in e for e in events_since(infra, mark))


@pytest.mark.parametrize("disrupt, counts", [
    pytest.param(lambda dc: dc.kill("lab-cp-3"), "2 healthy of 3 members",
                 id="a-member-down"),
    pytest.param(lambda dc: dc.remove_member("lab-cp-3"), "2 healthy of 2 members",
                 id="a-member-missing"),
])
def test_check_etcd_refuses_a_control_plane_upgrade_unless_etcd_is_full_and_healthy(
        deployed, disrupt, counts):
    infra = deployed()
    disrupt(lab_of(infra))
    mark = len(lab_of(infra).events())

    with pytest.raises(QuorumError) as err:
        upgrade_node(infra, "lab-cp-1", installer_for(infra, NEW), NEW)

    assert str(err.value) == (f"lab-cp-1: refusing: etcd has {counts}, 3 expected; every "
                              "member must be healthy before a control plane goes down")
    assert events_since(infra, mark) == []  # not even cordoned
    assert lab_of(infra).node("lab-cp-1").talos_version == OLD


def test_check_etcd_passes_on_a_full_healthy_cluster(deployed):
    infra = deployed()

    check_etcd(infra, "lab-cp-1")

    assert infra.talos.cluster_health().healthy_members() == 3


def test_rolled_back_upgrade_raises_upgrade_failed_and_leaves_the_node_uncordoned(deployed):
    infra = deployed(control_planes=1, workers=1,
                     faults=[{"type": "upgrade-fails", "node": "lab-worker-1"}])

    with pytest.raises(UpgradeFailed) as err:
        upgrade_node(infra, "lab-worker-1", installer_for(infra, NEW), NEW)

    assert str(err.value) == (
        f"lab-worker-1: upgrade to {NEW} failed; Talos rolled it back to {OLD} and it is "
        "serving again; the run stops here and no other node was touched after it")
    node = lab_of(infra).node("lab-worker-1")
    assert (node.state, node.ready, node.cordoned, node.talos_version) == (
        "running", True, False, OLD)
    assert f"rolled-back from {NEW}" in events_since(infra, 0, "lab-worker-1")


def test_upgrade_blocked_by_a_pdb_stops_at_drain_without_rebooting(deployed):
    infra = deployed(control_planes=1, workers=1,
                     faults=[{"type": "drain-blocked", "node": "lab-worker-1"}])
    started = infra.clock.now()

    with pytest.raises(StageTimeout) as err:
        upgrade_node(infra, "lab-worker-1", installer_for(infra, NEW), NEW)

    assert (err.value.stage, err.value.node) == ("drain", "lab-worker-1")
    assert infra.clock.now() - started == infra.spec.spec.upgrade.drain_timeout_seconds
    node = lab_of(infra).node("lab-worker-1")
    assert (node.state, node.cordoned, node.talos_version) == ("running", False, OLD)


def test_upgrade_refuses_while_the_kubernetes_api_is_down(deployed):
    infra = deployed()
    lab_of(infra).kill("lab-cp-2")
    lab_of(infra).kill("lab-cp-3")  # quorum lost: no API server

    with pytest.raises(StageTimeout) as err:
        upgrade_node(infra, "lab-worker-1", installer_for(infra, NEW), NEW)

    assert (err.value.stage, err.value.node) == ("pre-check", "lab-worker-1")
    assert not lab_of(infra).node("lab-worker-1").cordoned


# ---- replace: plan, retire, bring_up ------------------------------------------------------

def replace_node(infra: Infra, name: str) -> replace.ReplacePlan:
    """The replace-node flow's steps in order, as the library offers them."""
    plan = replace.plan(infra, name)
    replace.retire(infra, plan)
    replace.bring_up(infra, plan.new, plan.control_plane)
    destroy(infra, [plan.old])
    return plan


@pytest.mark.parametrize("kill", [False, True], ids=["reachable", "dead"])
def test_replacing_a_control_plane_removes_its_member_before_the_successor_joins(deployed,
                                                                                 kill):
    infra = deployed()
    if kill:
        lab_of(infra).kill("lab-cp-2")
    mark = len(lab_of(infra).events())

    plan = replace_node(infra, "lab-cp-2")

    assert (plan.new.name, plan.control_plane, plan.reachable) == ("lab-cp-4", True, not kill)
    order = [(node, what) for _, node, what in lab_of(infra).events()[mark:]
             if what in ("cordoned", "drained", "etcd-member-removed", "created",
                         "etcd-member", "deleted")]
    assert order == ([] if kill else [("lab-cp-2", "cordoned"), ("lab-cp-2", "drained")]) + [
        ("lab-cp-2", "etcd-member-removed"), ("lab-cp-4", "created"),
        ("lab-cp-4", "etcd-member"), ("lab-cp-2", "deleted")]
    health = infra.talos.cluster_health()
    assert sorted(m.node for m in health.members) == ["lab-cp-1", "lab-cp-3", "lab-cp-4"]
    assert health.healthy_members() == 3 and health.api_up
    assert plan_deploy(infra.spec, observe(infra)).empty  # the pool counts 3 again


def test_replacing_a_worker_drains_it_and_never_touches_etcd(deployed):
    infra = deployed(control_planes=1, workers=1)
    members = member_ids(infra)
    mark = len(lab_of(infra).events())

    plan = replace_node(infra, "lab-worker-1")

    assert (plan.new.name, plan.control_plane) == ("lab-worker-2", False)
    assert member_ids(infra) == members
    assert not any("etcd" in e for e in events_since(infra, mark))
    assert events_since(infra, mark, "lab-worker-1") == ["cordoned", "drained", "deleted"]
    assert [(n.name, n.ready) for n in lab_of(infra).nodes()] == [
        ("lab-cp-1", True), ("lab-worker-2", True)]


def test_replace_plan_refuses_a_healthy_control_plane_while_another_member_is_down(deployed):
    infra = deployed()
    lab_of(infra).kill("lab-cp-3")

    with pytest.raises(QuorumError, match="^lab-cp-1: refusing to replace: .* leaves 1 "
                                          "healthy of 2 members"):
        replace.plan(infra, "lab-cp-1")


def test_rerunning_a_replacement_that_stopped_after_creating_the_successor_reuses_it(
        deployed):
    infra = deployed()
    first = replace.plan(infra, "lab-cp-2")
    replace.retire(infra, first)
    infra.provider.create_node(first.new, "installer:" + OLD)  # then the run stopped

    again = replace.plan(infra, "lab-cp-2")
    replace.retire(infra, again)  # its member is gone already: nothing more to remove
    replace.bring_up(infra, again.new, again.control_plane)

    assert again.new == first.new
    assert [n.name for n in lab_of(infra).nodes()] == [
        "lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-cp-4", "lab-worker-1"]
    health = infra.talos.cluster_health()
    assert sorted(m.node for m in health.members) == ["lab-cp-1", "lab-cp-3", "lab-cp-4"]
    assert health.healthy_members() == 3
