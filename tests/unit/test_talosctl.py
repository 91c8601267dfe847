"""drover.talos.talosctl: contract tests of the talosctl backend against a fake talosctl.

No Talos node can run on this machine, so these run the real backend (real subprocesses,
process groups, deadlines, retries) against tests/fixtures/fake_talosctl.py, which records
every argv and answers from outputs shaped like talosctl's in tests/fixtures/talosctl/. They
pin the contract drover relies on: explicit --talosconfig/--nodes/--endpoints on every call,
configs by 0600 file only, `-o json` streams parsed, errors mapped onto drover's tree, transient
failures retried on an injected clock, hung calls killed with their children. When a real
talosctl is on PATH, one more test checks every subcommand and flag drover uses against its
`--help`.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drover.errors import (
    AlreadyBootstrapped,
    NotInMaintenance,
    QuorumError,
    RetriesExhausted,
    StageTimeout,
    TalosError,
    TransientError,
)
from drover.home import cluster_dir
from drover.lab.clock import ManualClock
from drover.machineconfig.secrets import ensure_secrets
from drover.providers.base import Node
from drover.spec import parse_spec
from drover.talos import open_talos
from drover.talos.talosctl import (
    UNREACHABLE,
    Talosctl,
    TalosctlNotFound,
    Timeouts,
    classify,
    image_tag,
    parse_etcd_members,
    parse_json_stream,
    scrub,
    upgrade_steps,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
FAKE = FIXTURES / "fake_talosctl.py"
ANSWERS = FIXTURES / "talosctl"

CP1 = Node("lab-cp-1", "lab", "controlplane", "cp", "running", "10.5.0.2")
CP2 = Node("lab-cp-2", "lab", "controlplane", "cp", "running", "10.5.0.3")
CP3 = Node("lab-cp-3", "lab", "controlplane", "cp", "running", "10.5.0.4")
W1 = Node("lab-worker-1", "lab", "worker", "worker", "running", "10.5.0.5")
NEW = Node("lab-cp-4", "lab", "controlplane", "cp", "maintenance", "10.5.0.9")
ADDRESSES = {n.address for n in (CP1, CP2, CP3, W1, NEW)}
IDS = {"lab-cp-1": "3e0e7ce2a4bfa1f6", "lab-cp-2": "5c4f1d0b8a2e9f37",
       "lab-cp-3": "09d7a2b6e0c1f4a5"}
HEALTHY_ETCD = {"get-etcdmember@10.5.0.2": "get-etcdmember-cp1.json",
                "get-etcdmember@10.5.0.3": "get-etcdmember-cp2.json",
                "get-etcdmember@10.5.0.4": "get-etcdmember-cp3.json"}
CP3_DOWN = {**HEALTHY_ETCD, "get-etcdmember@10.5.0.4": "fail:err-unavailable.txt"}
CANARY = "canary-7f3a9e-not-for-argv"
CONFIG = (f"version: v1alpha1\nmachine:\n  type: controlplane\n  token: {CANARY}\n"
          "  ca:\n    key: LS0tLS1CRUdJTiBFRDI1NTE5IFBSSVZBVEUgS0VZLS0tLS0K\n")
IMAGE = "factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b:v1.14.0"


class Fake:
    """The fake talosctl's side of a test: what it answers, and what it was asked."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.log = tmp_path / "talosctl-calls.jsonl"
        self.path = tmp_path / "bin" / "talosctl"
        self.path.parent.mkdir()
        # exec: the recorded pid is the pid drover started
        self.path.write_text(f"#!/bin/sh\nexec '{sys.executable}' -S '{FAKE}' \"$@\"\n")
        self.path.chmod(0o755)
        monkeypatch.setenv("FAKE_TALOSCTL_LOG", str(self.log))
        monkeypatch.setenv("FAKE_TALOSCTL_STATE", str(tmp_path / "talosctl-state.json"))
        self.answer({})

    def answer(self, answers: dict[str, str]) -> None:
        self.monkeypatch.setenv("FAKE_TALOSCTL_ANSWERS", json.dumps(answers))

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def commands(self) -> list[list[str]]:
        """Each call's argv without the global flags drover appends to every call."""
        return [c["argv"][:c["argv"].index("--talosconfig")] for c in self.calls()]

    def subcommands(self) -> list[str]:
        return [c["key"] for c in self.calls()]


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Fake:
    return Fake(tmp_path, monkeypatch)


@pytest.fixture
def spec(fake, make_spec):
    data = make_spec(talos_api="talosctl").model_dump(by_alias=True)
    data["spec"]["talos"]["talosctl"] = str(fake.path)
    spec = parse_spec(data, source="test")
    talosconfig = cluster_dir(spec.name) / "talosconfig"
    talosconfig.write_text("context: lab\n")  # the fake never reads it; drover passes its path
    talosconfig.chmod(0o600)
    return spec


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def talos(spec, clock) -> Talosctl:
    return Talosctl(spec, nodes=lambda: [CP1, CP2, CP3, W1], clock=clock,
                    timeouts=Timeouts(read=10.0))


def exited(pid: int, within: float) -> bool:
    """Whether the process has exited, or does within `within` seconds (pidfd readiness)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], within)[0])
    finally:
        os.close(fd)


def exercise_every_call(talos: Talosctl, fake: Fake, tmp_path: Path) -> None:
    """Every public method once, the way drover calls them; records land in fake's log."""
    fake.answer(CP3_DOWN)
    talos.version(CP1)
    talos.machine_status(CP1)
    talos.cluster_health()
    talos.bootstrap(CP1)
    talos.apply_config(CP1, CONFIG, insecure=False)
    talos.apply_config(NEW, CONFIG, insecure=True)
    talos.upgrade(W1, IMAGE)
    talos.upgrade_kubernetes("v1.37.0")
    talos.remove_member(CP3)
    talos.etcd_leave(CP2)
    talos.reset(W1, graceful=False, reboot=True, wipe=["EPHEMERAL"])
    talos.kubeconfig(tmp_path / "kubeconfig")
    talos.discovered_members()
    talos.etcd_snapshot(CP1, tmp_path / "db.snapshot")
    talos.etcd_state(CP2)
    talos.reset_etcd(CP2)
    talos.recover_etcd(CP2, tmp_path / "db.snapshot")
    fake.answer({"version": "version-v1.7.6.txt", **HEALTHY_ETCD})
    talos.upgrade(CP2, IMAGE)


# ---- every call names its target ----------------------------------------------------------

def test_every_call_names_talosconfig_nodes_and_endpoints_explicitly(talos, fake, tmp_path):
    exercise_every_call(talos, fake, tmp_path)

    calls = fake.calls()
    assert {c["key"] for c in calls} >= {
        "version", "get-machinestatus", "get-kubeletspec", "get-etcdmember", "etcd-members",
        "health", "bootstrap", "apply-config", "get-machinestatus+insecure",
        "apply-config+insecure", "upgrade", "reboot", "upgrade-k8s", "get-members",
        "etcd-remove-member", "etcd-leave", "reset", "kubeconfig"}
    for c in calls:
        argv = c["argv"]
        for flag in ("--talosconfig", "--nodes", "--endpoints"):
            assert argv.count(flag) == 1, (flag, argv)
        assert argv[argv.index("--talosconfig") + 1] == str(talos.talosconfig)
        node = argv[argv.index("--nodes") + 1]
        assert node in ADDRESSES and "," not in node
        assert argv[argv.index("--endpoints") + 1] == node  # straight to the node, no proxy


def test_talosctl_is_not_steered_by_a_talosconfig_in_the_environment(talos, fake, monkeypatch):
    monkeypatch.setenv("TALOSCONFIG", "/somewhere/else/config")

    talos.version(CP1)

    assert fake.calls()[0]["argv"].count("--talosconfig") == 1


# ---- apply-config ---------------------------------------------------------------------------

def test_apply_config_in_maintenance_goes_insecurely_through_a_private_file(talos, fake, caplog):
    caplog.set_level("DEBUG", logger="drover")

    talos.apply_config(NEW, CONFIG, insecure=True)

    assert fake.subcommands() == ["get-machinestatus+insecure", "apply-config+insecure"]
    apply = fake.calls()[1]
    assert apply["file_mode"] == "0o600"
    assert apply["file_text"] == CONFIG
    assert not Path(apply["file"]).exists()  # removed once talosctl is done with it
    assert Path(apply["file"]).parent == talos.talosconfig.parent  # the 0700 cluster folder
    assert all(CANARY not in " ".join(c["argv"]) for c in fake.calls())
    assert CANARY not in caplog.text


@pytest.mark.parametrize("mode", ["no-reboot", "reboot"])
def test_apply_config_to_a_configured_node_is_authenticated_with_its_mode(talos, fake, mode):
    talos.apply_config(CP1, CONFIG, insecure=False, mode=mode)

    assert fake.commands() == [["apply-config", "--file", fake.calls()[0]["file"],
                                "--mode", mode]]
    assert "--insecure" not in fake.calls()[0]["argv"]


def test_machine_config_is_the_spec_of_the_v1alpha1_resource(talos, fake):
    config = talos.machine_config(CP1)

    assert config is not None and config.startswith("version: v1alpha1\nmachine:")
    assert fake.subcommands() == ["get-machineconfig"]


@pytest.mark.parametrize("answer", ["fail:err-tls-certificate-required.txt",
                                    "get-machinestatus-installing+insecure.json"])
def test_insecure_apply_to_a_node_past_maintenance_sends_nothing(talos, fake, answer):
    fake.answer({"get-machinestatus+insecure": answer})

    with pytest.raises(NotInMaintenance, match="lab-cp-4"):
        talos.apply_config(NEW, CONFIG, insecure=True)

    assert fake.subcommands() == ["get-machinestatus+insecure"]


def test_authenticated_apply_to_a_maintenance_node_says_to_apply_insecurely(talos, fake):
    fake.answer({"apply-config": "fail:err-tls-unknown-authority.txt"})

    with pytest.raises(TalosError, match="maintenance mode") as err:
        talos.apply_config(NEW, CONFIG, insecure=False)

    assert not isinstance(err.value, NotInMaintenance)
    assert fake.subcommands() == ["apply-config"]  # a TLS mismatch is never retried
    assert not Path(fake.calls()[0]["file"]).exists()  # removed on failure too


# ---- bootstrap, retries, deadlines ----------------------------------------------------------

def test_bootstrap_answered_already_exists_raises_already_bootstrapped(talos, fake):
    fake.answer({"bootstrap": "fail:err-already-exists.txt"})

    with pytest.raises(AlreadyBootstrapped, match="lab-cp-1.*etcd data directory is not empty"):
        talos.bootstrap(CP1)

    assert fake.subcommands() == ["bootstrap"]


def test_unavailable_twice_then_success_is_retried_on_the_injected_clock(talos, fake, clock):
    fake.answer({"bootstrap": "fail:err-unavailable.txt:2"})
    started = time.monotonic()

    talos.bootstrap(CP1)

    assert fake.subcommands() == ["bootstrap"] * 3
    assert 1.5 <= clock.now() - 1000.0 <= 2.5  # 0.5 s then 1 s, plus jitter, on the clock
    assert time.monotonic() - started < 2.0  # and no real sleep


def test_a_call_unavailable_on_every_attempt_ends_in_retries_exhausted(spec, fake, clock):
    talos = Talosctl(spec, nodes=lambda: [CP1], clock=clock, attempts=3)
    fake.answer({"version": "fail:err-unavailable.txt"})

    with pytest.raises(RetriesExhausted, match=r"lab-cp-1 \(10.5.0.2\): talosctl version"):
        talos.version(CP1)

    assert fake.subcommands() == ["version"] * 3


def test_a_hung_talosctl_is_killed_with_its_children_and_the_error_names_node_and_command(
        spec, fake, clock):
    talos = Talosctl(spec, nodes=lambda: [CP1], clock=clock, timeouts=Timeouts(read=1.0))
    fake.answer({"version": "hang"})
    started = time.monotonic()

    with pytest.raises(StageTimeout, match=r"lab-cp-1 \(10.5.0.2\): talosctl version: "
                                           r"no answer within 1s") as err:
        talos.version(CP1)

    assert time.monotonic() - started < 4.0
    assert err.value.node == "lab-cp-1 (10.5.0.2)"
    [call] = fake.calls()  # a deadline is not transient: no retry
    # SIGKILL is delivered asynchronously: wait for each exit on a pidfd (no polling sleep)
    assert all(exited(pid, within=2.0) for pid in call["pids"]), call["pids"]


def test_machine_status_of_a_node_that_hangs_reads_unreachable(spec, fake, clock):
    talos = Talosctl(spec, nodes=lambda: [CP1], clock=clock, timeouts=Timeouts(read=0.3))
    fake.answer({"get-machinestatus": "hang"})

    assert talos.machine_status(CP1) == UNREACHABLE


# ---- machine status ---------------------------------------------------------------------------

def test_machine_status_of_a_running_node_has_its_versions(talos, fake):
    status = talos.machine_status(CP1)

    assert (status.stage, status.configured, status.ready) == ("running", True, True)
    assert (status.talos_version, status.kubernetes_version) == ("v1.13.9", "1.36.3")
    assert fake.subcommands() == ["get-machinestatus", "version", "get-kubeletspec"]


def test_machine_status_of_a_booting_node_is_not_ready(talos, fake):
    fake.answer({"get-machinestatus": "get-machinestatus-booting.json"})

    status = talos.machine_status(CP1)

    assert (status.stage, status.configured, status.ready) == ("booting", True, False)
    assert status.talos_version is None
    assert fake.subcommands() == ["get-machinestatus"]


def test_machine_status_of_a_maintenance_node_falls_back_to_the_insecure_api(talos, fake):
    fake.answer({"get-machinestatus": "fail:err-tls-unknown-authority.txt"})

    status = talos.machine_status(NEW)

    assert (status.stage, status.configured, status.ready) == ("maintenance", False, False)
    assert fake.subcommands() == ["get-machinestatus", "get-machinestatus+insecure"]


def test_machine_status_of_an_unreachable_node_is_not_retried(talos, fake):
    fake.answer({"get-machinestatus": "fail:err-unavailable.txt"})

    assert talos.machine_status(CP1) == UNREACHABLE
    assert fake.subcommands() == ["get-machinestatus"]  # the caller's poll is the retry


def test_machine_status_of_another_clusters_node_is_an_error(talos, fake):
    fake.answer({"get-machinestatus": "fail:err-tls-unknown-authority.txt",
                 "get-machinestatus+insecure": "fail:err-tls-certificate-required.txt"})

    with pytest.raises(TalosError, match="not this cluster's node"):
        talos.machine_status(CP1)


# ---- JSON streams and etcd membership ---------------------------------------------------------

def test_a_json_stream_of_several_objects_is_parsed_one_per_resource(talos, fake):
    docs = parse_json_stream((ANSWERS / "get-members.json").read_text())

    assert [d["spec"]["hostname"] for d in docs] == [
        "lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-worker-1"]
    assert all(d["node"] == "10.5.0.2" for d in docs)
    assert parse_json_stream('{"a": 1}{"b": 2}\n\n  {"c": [3]}\n') == [
        {"a": 1}, {"b": 2}, {"c": [3]}]
    assert parse_json_stream("") == []
    with pytest.raises(TalosError, match="other than JSON"):
        parse_json_stream('{"a": 1} error: not json')

    fake.answer(HEALTHY_ETCD)
    members = talos.discovered_members()
    assert [(m.hostname, m.addresses, m.machine_type) for m in members][-1] == (
        "lab-worker-1", ("10.5.0.5",), "worker")


def test_etcd_members_rows_are_read_by_id_even_without_a_hostname():
    rows = parse_etcd_members((ANSWERS / "etcd-members.txt").read_text())

    assert [(r.member_id, r.hostname, r.learner) for r in rows] == [
        (IDS["lab-cp-1"], "lab-cp-1", False), (IDS["lab-cp-2"], "lab-cp-2", False),
        (IDS["lab-cp-3"], "", False)]
    assert rows[2].peer_hosts() == ["10.5.0.4"]
    old = "ID               HOSTNAME   PEER URLS               CLIENT URLS\n" \
          "9d7a2b6e0c1f4a5  lab-cp-3   https://10.5.0.4:2380   https://10.5.0.4:2379\n"
    assert parse_etcd_members(old)[0].member_id == "09d7a2b6e0c1f4a5"  # zero-padded like Talos
    learners = parse_etcd_members((ANSWERS / "etcd-members-learner.txt").read_text())
    assert [r.learner for r in learners] == [False, False, True]


def test_cluster_health_of_a_healthy_cluster(talos, fake):
    fake.answer(HEALTHY_ETCD)

    health = talos.cluster_health()

    assert (health.bootstrapped, health.api_up, health.quorum_lost) == (True, True, False)
    assert [(m.node, m.member_id, m.healthy) for m in health.members] == [
        ("lab-cp-1", IDS["lab-cp-1"], True), ("lab-cp-2", IDS["lab-cp-2"], True),
        ("lab-cp-3", IDS["lab-cp-3"], True)]  # cp-3 named by its own member ID
    [health_call] = [c for c in fake.commands() if c[0] == "health"]
    assert health_call == ["health", "--server", "--wait-timeout=10s", "--control-plane-nodes",
                           "10.5.0.2,10.5.0.3,10.5.0.4", "--worker-nodes", "10.5.0.5"]


def test_cluster_health_with_a_member_down_names_it_by_its_peer_address(talos, fake):
    fake.answer(CP3_DOWN)

    health = talos.cluster_health()

    assert [(m.node, m.healthy) for m in health.members] == [
        ("lab-cp-1", True), ("lab-cp-2", True), ("lab-cp-3", False)]
    assert (health.quorum_lost, health.healthy_members()) == (False, 2)


def test_cluster_health_with_no_healthy_member_has_lost_quorum(talos, fake):
    fake.answer({"health": "fail:err-permission-denied.txt"})  # never reached

    health = talos.cluster_health()

    assert (health.bootstrapped, health.api_up, health.quorum_lost) == (True, False, True)
    assert "health" not in fake.subcommands()


def test_cluster_health_of_nodes_in_maintenance_is_not_bootstrapped(talos, fake):
    fake.answer({"get-etcdmember": "fail:err-tls-unknown-authority.txt",
                 "etcd-members": "fail:err-tls-unknown-authority.txt"})

    health = talos.cluster_health()

    assert (health.bootstrapped, health.api_up, health.quorum_lost, health.members) == (
        False, False, False, [])


def test_cluster_health_api_is_down_when_talosctl_health_fails(talos, fake):
    fake.answer({**HEALTHY_ETCD, "health": "fail:err-permission-denied.txt"})

    assert talos.cluster_health().api_up is False


def test_remove_member_of_a_dead_node_goes_by_id_through_a_healthy_control_plane(talos, fake):
    fake.answer(CP3_DOWN)

    talos.remove_member(CP3)

    [call] = [c for c in fake.calls() if c["key"] == "etcd-remove-member"]
    assert call["argv"][:3] == ["etcd", "remove-member", IDS["lab-cp-3"]]
    assert call["argv"][call["argv"].index("--nodes") + 1] == CP1.address


def test_remove_member_of_a_live_node_uses_its_own_member_id_and_another_node(talos, fake):
    fake.answer(HEALTHY_ETCD)

    talos.remove_member(CP1)

    [call] = [c for c in fake.calls() if c["key"] == "etcd-remove-member"]
    assert call["argv"][2] == IDS["lab-cp-1"]
    assert call["argv"][call["argv"].index("--nodes") + 1] == CP2.address


def test_remove_member_of_a_node_that_is_no_member_does_nothing(talos, fake):
    fake.answer(HEALTHY_ETCD)

    talos.remove_member(NEW)

    assert "etcd-remove-member" not in fake.subcommands()


def test_remove_member_without_another_healthy_control_plane_refuses(talos, fake):
    fake.answer({"get-etcdmember@10.5.0.4": "get-etcdmember-cp3.json"})

    with pytest.raises(QuorumError, match="no control plane with healthy etcd answers besides "
                                          "lab-cp-3"):
        talos.remove_member(CP3)

    assert "etcd-remove-member" not in fake.subcommands()


def test_remove_member_refused_by_etcd_raises_quorum_error(talos, fake):
    fake.answer({**CP3_DOWN, "etcd-remove-member": "fail:err-unhealthy-cluster.txt"})

    with pytest.raises(QuorumError, match="unhealthy cluster"):
        talos.remove_member(CP3)


# ---- upgrades -----------------------------------------------------------------------------

@pytest.mark.parametrize(("running", "expected"), [
    ("version-v1.7.6.txt", [["upgrade", "--image", IMAGE, "--wait", "--preserve"]]),
    ("version-v1.10.5.txt", [["upgrade", "--image", IMAGE, "--wait"]]),
    ("version.txt", [["upgrade", "--image", IMAGE, "--wait", "--drain=false", "--no-reboot"],
                     ["reboot", "--wait"]]),
])
def test_upgrade_flags_follow_the_talos_version_the_node_runs(talos, fake, running, expected):
    fake.answer({"version": running})

    talos.upgrade(W1, IMAGE)

    assert fake.commands() == [["version", "--short"], *expected]


def test_upgrade_steps_switch_at_v1_8_and_v1_13():
    def words(version: str) -> list[list[str]]:
        return [w + f for w, f in upgrade_steps(version, "i:v9")]

    assert "--preserve" in words("v1.7.99")[0] and "--preserve" not in words("v1.8.0")[0]
    assert len(words("v1.12.5")) == 1
    assert words("v1.13.0")[1] == ["reboot", "--wait"]
    assert words("v1.14.0-rc.1")[0][-1] == "--no-reboot"
    assert image_tag("factory.talos.dev/installer/abc:v1.13.9@sha256:00ff") == "v1.13.9"
    assert image_tag("registry:5000/installer") is None


def test_upgrade_to_the_version_already_running_changes_nothing(talos, fake):
    talos.upgrade(CP1, "factory.talos.dev/metal-installer/abc:v1.13.9")

    assert fake.subcommands() == ["version"]


def test_upgrading_a_control_plane_needs_every_etcd_member_healthy(talos, fake):
    fake.answer(CP3_DOWN)

    with pytest.raises(QuorumError, match=r"lab-cp-1: refusing .* 2 healthy of 3 members "
                                          r"\(lab-cp-3 is not healthy\)"):
        talos.upgrade(CP1, IMAGE)

    assert "upgrade" not in fake.subcommands()


def test_an_upgrade_talos_refuses_for_etcd_health_raises_quorum_error(talos, fake):
    fake.answer({**HEALTHY_ETCD, "version": "version-v1.10.5.txt",
                 "upgrade": "fail:err-quorum.txt"})

    with pytest.raises(QuorumError, match="all members must be healthy"):
        talos.upgrade(CP1, IMAGE)

    assert fake.subcommands().count("upgrade") == 1


def test_upgrade_kubernetes_runs_upgrade_k8s_through_a_healthy_control_plane(talos, fake):
    fake.answer(CP3_DOWN)

    done = talos.upgrade_kubernetes("v1.37.0")

    assert done == ["lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-worker-1"]
    assert ["upgrade-k8s", "--to", "1.37.0"] in fake.commands()


# ---- the other calls ----------------------------------------------------------------------

def test_kubeconfig_reset_and_etcd_leave_pass_their_flags(talos, fake, tmp_path):
    fake.answer(HEALTHY_ETCD)
    target = tmp_path / "kubeconfig"

    talos.kubeconfig(target)
    talos.reset(W1, graceful=False, reboot=True, wipe=["STATE", "EPHEMERAL"])
    talos.etcd_leave(CP2)

    commands = fake.commands()
    assert ["kubeconfig", str(target), "--force", "--merge=false"] in commands
    assert ["reset", "--graceful=false", "--reboot=true", "--wait=false",
            "--system-labels-to-wipe", "STATE", "--system-labels-to-wipe", "EPHEMERAL"] in commands
    leave = fake.calls()[-1]
    assert leave["argv"][:2] == ["etcd", "leave"] and "10.5.0.3" in leave["argv"]


# ---- etcd disaster recovery -----------------------------------------------------------------

def test_etcd_snapshot_writes_the_file_through_the_node_and_reads_its_info(talos, fake,
                                                                          tmp_path):
    target = tmp_path / "db.snapshot"

    info = talos.etcd_snapshot(CP2, target)

    assert fake.commands() == [["etcd", "snapshot", str(target)]]
    assert fake.calls()[0]["argv"][-3:] == ["10.5.0.3", "--endpoints", "10.5.0.3"]
    assert target.read_bytes().startswith(b"fake etcd snapshot")
    assert (info.hash, info.revision, info.total_keys) == ("c25fd181", 4193, 1287)
    assert info.size == target.stat().st_size


def test_etcd_snapshot_that_wrote_nothing_is_an_error(talos, fake, tmp_path):
    fake.answer({"etcd-snapshot": "fail:err-no-leader.txt"})

    with pytest.raises(TalosError, match="no leader"):
        talos.etcd_snapshot(CP1, tmp_path / "db.snapshot")
    assert not (tmp_path / "db.snapshot").exists()


@pytest.mark.parametrize("answer, state", [
    ("service.txt", "Running"),
    ("service-preparing.txt", "Preparing"),
])
def test_etcd_state_is_the_state_line_of_service_etcd(talos, fake, answer, state):
    fake.answer({"service": answer})

    assert talos.etcd_state(CP3) == state
    assert fake.commands() == [["service", "etcd"]]


def test_etcd_state_of_an_unreachable_node_is_not_retried(talos, fake):
    fake.answer({"service": "fail:err-unavailable.txt"})

    with pytest.raises(TransientError):
        talos.etcd_state(CP3)
    assert len(fake.calls()) == 1


def test_reset_etcd_wipes_only_ephemeral_without_leaving_and_reboots(talos, fake):
    talos.reset_etcd(CP2)

    assert fake.commands() == [["reset", "--graceful=false", "--reboot=true", "--wait=false",
                                "--system-labels-to-wipe", "EPHEMERAL"]]


def test_recover_etcd_bootstraps_from_the_snapshot_file(talos, fake, tmp_path):
    snapshot = tmp_path / "db.snapshot"
    snapshot.write_bytes(b"bbolt")
    snapshot.chmod(0o600)

    talos.recover_etcd(CP1, snapshot)

    call = fake.calls()[0]
    assert fake.commands() == [["bootstrap", f"--recover-from={snapshot}"]]
    assert (call["recover_from_mode"], call["recover_from_size"]) == ("0o600", 5)


def test_recover_etcd_onto_a_node_holding_etcd_data_raises_already_bootstrapped(talos, fake,
                                                                               tmp_path):
    fake.answer({"bootstrap": "fail:err-already-exists.txt"})

    with pytest.raises(AlreadyBootstrapped):
        talos.recover_etcd(CP1, tmp_path / "db.snapshot")


def test_a_refusal_is_a_talos_error_with_its_stderr_scrubbed_and_not_retried(talos, fake):
    fake.answer({"reset": "fail:err-secret-echoed.txt"})

    with pytest.raises(TalosError) as err:
        talos.reset(W1)

    message = str(err.value)
    assert message.startswith("lab-worker-1 (10.5.0.5): talosctl reset: ")
    assert "failed to parse client certificate" in message
    for secret in ("BEGIN ED25519", "FAKEfake", "LS0tLS1CRUdJTi", "abcdef.0123456789abcdef",
                   "TUM0Q0FRQXdCUVlE"):
        assert secret not in message
    assert fake.subcommands() == ["reset"]


def test_scrub_keeps_paths_addresses_and_digests():
    text = ("open /tmp/pytest-of-root/pytest-12/test_something_long0/drover/talosconfig: "
            "no such file; dial tcp 10.5.0.2:50000; image sha256:" + "ab12" * 16)
    assert scrub(text) == text


@pytest.mark.parametrize(("stderr", "kind"), [
    ("rpc error: code = AlreadyExists desc = etcd data directory is not empty", "already-exists"),
    ('code = Unavailable desc = "transport: authentication handshake failed: x509: ..."', "tls"),
    ("rpc error: code = Unavailable desc = connection error", "transient"),
    ("rpc error: code = DeadlineExceeded desc = context deadline exceeded", "transient"),
    ("dial tcp 10.5.0.2:50000: connect: connection refused", "transient"),
    ("read tcp 10.5.0.1:4242->10.5.0.2:50000: i/o timeout", "transient"),
    ("etcdserver: unhealthy cluster", "quorum"),
    ("rpc error: code = PermissionDenied desc = not authorized", "error"),
])
def test_stderr_is_classified(stderr, kind):
    assert classify(stderr) == kind


def test_talosconfig_is_issued_from_the_secrets_bundle_when_missing(talos, fake):
    talos.talosconfig.unlink()
    ensure_secrets(talos.talosconfig.parent, nodes_exist=False)

    talos.version(CP1)

    assert talos.talosconfig.stat().st_mode & 0o777 == 0o600


def test_without_talosconfig_or_secrets_an_authenticated_call_says_what_is_missing(talos, fake):
    talos.talosconfig.unlink()

    with pytest.raises(TalosError, match="no talosconfig at .* and no secrets bundle"):
        talos.version(CP1)

    assert fake.calls() == []


# ---- finding talosctl ---------------------------------------------------------------------

def test_missing_talosctl_on_path_says_how_to_install_it_or_where_to_set_it(
        make_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(TalosctlNotFound, match=r"not found on PATH.*install the talosctl "
                                               r"matching .* v1\.13\.9.*spec\.talos\.talosctl"):
        Talosctl(make_spec(talos_api="talosctl"))


def test_a_configured_talosctl_path_that_is_not_executable_names_the_setting(spec, tmp_path):
    data = spec.model_dump(by_alias=True)
    data["spec"]["talos"]["talosctl"] = str(tmp_path / "nowhere" / "talosctl")

    with pytest.raises(TalosctlNotFound, match=r"spec\.talos\.talosctl: '.*nowhere/talosctl' "
                                               r"is not an executable file"):
        Talosctl(parse_spec(data, source="test"))


def test_the_spec_picks_the_talosctl_backend(spec):
    assert isinstance(open_talos(spec), Talosctl)


# ---- against a real talosctl, when there is one ---------------------------------------------

def _help_path(command: list[str]) -> list[str]:
    """`talosctl <path> --help` for a recorded command: groups keep their subcommand."""
    return command[:2] if command[0] == "etcd" else command[:1]


@pytest.mark.skipif(shutil.which("talosctl") is None,
                    reason="no real talosctl on PATH to check drover's subcommands and flags "
                           "against; the fake answers everything else")
def test_a_real_talosctl_knows_every_subcommand_and_flag_drover_uses(talos, fake, tmp_path):
    exercise_every_call(talos, fake, tmp_path)
    real = shutil.which("talosctl")
    assert real is not None
    used: dict[tuple[str, ...], set[str]] = {}
    for call in fake.calls():
        argv = call["argv"]
        path = tuple(_help_path([a for a in argv if not a.startswith("-")]))
        used.setdefault(path, set()).update(a.split("=", 1)[0] for a in argv if a.startswith("-"))

    missing = []
    for path, flags in sorted(used.items()):
        shown = subprocess.run([real, *path, "--help"], capture_output=True, text=True,
                               check=False, timeout=30,
                               env={**os.environ, "TALOSCONFIG": "/dev/null"})
        assert shown.returncode == 0, (path, shown.stderr)
        missing += [f"talosctl {' '.join(path)} {flag}" for flag in sorted(flags)
                    if not re.search(rf"(^|[\s,]){re.escape(flag)}([\s,=]|$)", shown.stdout,
                                     re.M)]
    assert missing == []
