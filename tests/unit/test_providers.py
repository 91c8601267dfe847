"""drover.providers and drover.talos: the lab backends seen only through the abstract interfaces."""

from __future__ import annotations

import math

import pytest

from drover.errors import NodeNotFound, NotInMaintenance, SpecError
from drover.lab.clock import ManualClock, SystemClock
from drover.lab.datacenter import Datacenter
from drover.providers import PROVIDERS, Node, Provider, open_provider
from drover.providers.lab import LabProvider
from drover.spec import parse_spec
from drover.talos import ClusterHealth, EtcdMember, MachineStatus, TalosAPI, open_talos
from drover.talos.base import TALOS_BACKENDS
from drover.talos.lab import LabTalos

IMAGE = "factory.talos.dev/metal-installer/abc123:v1.13.9"
CONFIG = f"version: v1alpha1\nmachine:\n  install:\n    image: {IMAGE}\n"


def settle(provider: Provider) -> None:
    """Jump the clock through every scheduled change (the lab reports math.inf when none)."""
    for _ in range(200):
        due = provider.next_change_at()
        if due == math.inf:
            return
        provider.clock.sleep_until(due)
    raise AssertionError("the lab never settled")


@pytest.fixture
def backends(make_spec, lab) -> tuple[Provider, TalosAPI]:
    """A 3 + 2 demo cluster's provider and Talos API sharing one lab on a ManualClock."""
    spec = make_spec()
    dc = lab(spec)
    return LabProvider(spec, dc), LabTalos(spec, dc)


def deploy(provider: Provider, talos: TalosAPI, spec_nodes) -> None:
    for node in spec_nodes:
        provider.create_node(node, IMAGE)
    settle(provider)
    for node in provider.list_nodes():
        talos.apply_config(node, CONFIG, insecure=True)
    settle(provider)
    talos.bootstrap(provider.get_node("lab-cp-1"))
    settle(provider)


# ---- the registries --------------------------------------------------------------------


def test_open_provider_and_open_talos_pick_the_lab_backends_from_the_spec(make_spec, tmp_path):
    spec = make_spec(clock="virtual")

    provider, talos = open_provider(spec), open_talos(spec)

    assert isinstance(provider, LabProvider) and provider.kind == "lab"
    assert isinstance(talos, LabTalos)
    assert provider.lab.store.path == tmp_path / "lab.db"  # under $DROVER_HOME


def test_backends_opened_separately_share_the_lab_under_drover_home(make_spec):
    spec = make_spec(profile="instant", clock="virtual")
    provider = open_provider(spec)
    created = provider.create_node(spec.declared_nodes()[0], IMAGE)

    status = open_talos(spec).machine_status(created)

    assert status.stage == "maintenance"
    assert [n.name for n in open_provider(spec).list_nodes()] == ["lab-cp-1"]


def test_unknown_provider_kind_is_rejected_naming_the_field(make_spec, monkeypatch):
    monkeypatch.delitem(PROVIDERS.factories, "lab")

    with pytest.raises(ValueError, match=r"^spec\.provider\.kind: no provider 'lab'"):
        open_provider(make_spec())


def test_unregistered_talos_backend_is_rejected_naming_the_field_and_the_known_ones(
        make_spec, monkeypatch):
    monkeypatch.delitem(TALOS_BACKENDS.factories, "lab")

    with pytest.raises(ValueError, match=r"^spec\.talos\.api: no Talos backend 'lab'; "
                                         r"known: talosctl$"):
        open_talos(make_spec())


def test_spec_with_an_unknown_provider_kind_fails_validation_at_spec_provider(make_spec):
    data = make_spec().model_dump(by_alias=True)
    data["spec"]["provider"] = {"kind": "vmware"}

    with pytest.raises(SpecError) as err:
        parse_spec(data, source="cluster.yaml")

    assert len(err.value.issues) == 1
    assert err.value.issues[0].startswith("spec.provider: ")
    assert "'proxmox'" in err.value.issues[0]


# ---- create, get, list, delete -------------------------------------------------------------


def test_create_node_returns_the_node_as_the_infrastructure_sees_it(backends, make_spec):
    provider, _ = backends
    worker = make_spec().declared_nodes()[3]

    node = provider.create_node(worker, IMAGE)

    assert isinstance(node, Node)
    assert (node.name, node.cluster, node.role, node.pool, node.state) == (
        "lab-worker-1", "lab", "worker", "worker", "created")
    assert node.address.startswith("10.5.0.")


def test_create_node_is_noop_after_it_exists(backends, make_spec):
    provider, _ = backends
    cp = make_spec().declared_nodes()[0]
    first = provider.create_node(cp, IMAGE)

    again = provider.create_node(cp, IMAGE)

    assert again == first
    assert provider.list_nodes() == [first]


def test_get_node_returns_the_current_state(backends, make_spec):
    provider, _ = backends
    cp = make_spec().declared_nodes()[0]
    provider.create_node(cp, IMAGE)
    provider.clock.sleep_until(provider.next_change_at())

    assert provider.get_node("lab-cp-1").state == "booting"


def test_get_node_of_an_absent_node_raises_node_not_found(backends):
    provider, _ = backends

    with pytest.raises(NodeNotFound, match="lab-cp-9") as err:
        provider.get_node("lab-cp-9")

    assert isinstance(err.value, KeyError)
    assert str(err.value).startswith("lab-cp-9: ")  # not quoted like a bare KeyError


def test_list_nodes_is_sorted_by_name(backends, make_spec):
    provider, _ = backends
    for node in reversed(make_spec().declared_nodes()):
        provider.create_node(node, IMAGE)

    assert [n.name for n in provider.list_nodes()] == [
        "lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-worker-1", "lab-worker-2"]


def test_delete_node_is_noop_when_absent(backends, make_spec):
    provider, _ = backends
    cp1, cp2 = make_spec().declared_nodes()[:2]
    provider.create_node(cp1, IMAGE)
    provider.create_node(cp2, IMAGE)

    provider.delete_node("lab-cp-1")
    provider.delete_node("lab-cp-1")
    provider.delete_node("never-existed")

    assert [n.name for n in provider.list_nodes()] == ["lab-cp-2"]


def test_prepare_image_returns_a_usable_handle_every_time(backends):
    provider, _ = backends

    assert provider.prepare_image(IMAGE) == IMAGE
    assert provider.prepare_image(IMAGE) == IMAGE


def test_next_change_at_is_infinite_when_nothing_will_change_by_itself(backends, make_spec):
    provider, _ = backends
    assert provider.next_change_at() == math.inf  # an empty lab

    provider.create_node(make_spec().declared_nodes()[0], IMAGE)

    assert provider.clock.now() < provider.next_change_at() < math.inf


# ---- the Talos API mapping -----------------------------------------------------------------


def test_machine_status_of_a_maintenance_node_is_unconfigured(backends, make_spec):
    provider, talos = backends
    node = provider.create_node(make_spec().declared_nodes()[0], IMAGE)
    settle(provider)

    assert talos.machine_status(node) == MachineStatus(
        stage="maintenance", configured=False, ready=False, talos_version=None)


def test_machine_status_after_apply_is_configured_with_the_installed_version(backends, make_spec):
    provider, talos = backends
    node = provider.create_node(make_spec().declared_nodes()[0], IMAGE)
    settle(provider)

    talos.apply_config(node, CONFIG, insecure=True)

    assert talos.machine_status(node) == MachineStatus(
        stage="installing", configured=True, ready=False, talos_version="v1.13.9")


def test_a_configured_node_refuses_insecure_config_through_the_interface(backends, make_spec):
    provider, talos = backends
    node = provider.create_node(make_spec().declared_nodes()[0], IMAGE)
    settle(provider)
    talos.apply_config(node, CONFIG, insecure=True)
    settle(provider)

    with pytest.raises(NotInMaintenance):
        talos.apply_config(node, CONFIG, insecure=True)


def test_cluster_health_before_bootstrap_has_no_members(backends, make_spec):
    provider, talos = backends
    for node in make_spec().declared_nodes():
        provider.create_node(node, IMAGE)

    assert talos.cluster_health() == ClusterHealth(
        bootstrapped=False, api_up=False, quorum_lost=False, members=[])


def test_healthy_cluster_maps_to_ready_nodes_and_healthy_members(backends, make_spec):
    provider, talos = backends
    deploy(provider, talos, make_spec().declared_nodes())

    health = talos.cluster_health()

    assert (health.bootstrapped, health.api_up, health.quorum_lost) == (True, True, False)
    assert [m.node for m in health.members] == ["lab-cp-1", "lab-cp-2", "lab-cp-3"]
    assert all(isinstance(m, EtcdMember) and len(m.member_id) == 16 for m in health.members)
    assert health.healthy_members() == 3
    assert all(talos.machine_status(n).ready for n in provider.list_nodes())


def test_a_dead_control_plane_shows_as_an_unhealthy_member(backends, make_spec):
    provider, talos = backends
    deploy(provider, talos, make_spec().declared_nodes())
    lab: Datacenter = provider.lab  # type: ignore[attr-defined]

    lab.kill("lab-cp-2")

    health = talos.cluster_health()
    assert [(m.node, m.healthy) for m in health.members] == [
        ("lab-cp-1", True), ("lab-cp-2", False), ("lab-cp-3", True)]
    assert health.healthy_members() == 2
    assert not health.quorum_lost
    status = talos.machine_status(provider.get_node("lab-cp-2"))
    assert (status.stage, status.ready) == ("dead", False)


# ---- timing scale ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile, compression, scale, note", [
    ("demo", 1, 1.0, "lab, demo profile, wall-clock time"),
    ("realistic", 60, 60.0,
     "lab, realistic profile compressed 60x, wall-clock time; durations scaled back up"),
])
def test_timing_scale_on_the_system_clock_undoes_compression(make_spec, lab, profile,
                                                             compression, scale, note):
    spec = make_spec(profile=profile, compression=compression)

    provider = LabProvider(spec, lab(spec, SystemClock()))

    assert provider.timing_scale() == (scale, note)


def test_timing_scale_on_a_virtual_clock_says_so(make_spec, lab):
    spec = make_spec(profile="demo")

    scale, note = LabProvider(spec, lab(spec, ManualClock())).timing_scale()

    assert scale == 1.0
    assert "virtual" in note


def test_timing_scale_on_a_virtual_clock_still_undoes_compression(make_spec, lab):
    spec = make_spec(profile="realistic", compression=60)

    scale, _ = LabProvider(spec, lab(spec, ManualClock())).timing_scale()

    assert scale == 60.0
