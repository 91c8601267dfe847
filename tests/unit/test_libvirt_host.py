"""The libvirt host handle's own logic, over a recorded-answer connection (the real host,
libvirtd and sshd, is exercised in tests/system/test_libvirt.py): batched virsh answers
split per command, domains read from dominfo and metadata, console matches per file, a
boot file uploaded once per host however many nodes ask (and not at all when an earlier
run's marker is there), the connection timed once, a node created in one round trip with
each step timed on the host, the failed step named."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from drover import steps
from drover.errors import ProviderError
from drover.lab.clock import ManualClock
from drover.provider_settings import SshTarget
from drover.providers import libvirt_host
from drover.providers.libvirt_host import Host
from drover.ssh import CommandResult, CommandTimeout, Upload

DOMINFO = """Id:             3
Name:           c-cp-1
UUID:           4ff5b9ad-20d6-4ee9-a4cc-2da4ce916d2b
OS Type:        hvm
State:          running
"""


class Recorded:
    """A connection answering from a table: argv's last word → stdout."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.commands, self.uploads = answers, [], []
        self.opened_at, self.connect_seconds = 50.0, 0.06
        self.uploading, self.release = threading.Event(), threading.Event()
        self.marked = False  # an earlier run's upload marker is on the host

    def run(self, command, timeout, stdin=None, *, check=True):
        self.commands.append(list(command))
        if command[:3] == ["sh", "-c", libvirt_host._MARKER]:
            return CommandResult(list(command), 0 if self.marked else 1, "", "")
        return CommandResult(list(command), 0, self.answers.get(command[-1], ""), "")

    def upload(self, local, remote, timeout=300.0, mode=None):
        self.uploading.set()
        self.release.wait(timeout=30)  # held open until the test has started every asker
        self.uploads.append(remote)
        return Upload(remote, "ab" * 32, False, 1, 0)


@pytest.fixture
def host(monkeypatch):
    def make(answers: dict[str, str], port: int = 22) -> tuple[Host, Recorded]:
        conn = Recorded(answers)
        monkeypatch.setattr(libvirt_host, "connect", lambda target: conn)
        target = SshTarget(host="10.0.0.1", port=port)
        return Host(target, "qemu:///system", f"c{port}", ManualClock()), conn
    return make


def test_a_batch_runs_in_one_virsh_process_and_comes_back_per_command(host):
    batch_out = "@@drover@@a@@running\n@@drover@@b@@@@drover@@c@@x y\n"
    h, conn = host({})
    conn.answers = {"": ""}
    conn.run = lambda command, timeout, stdin=None, check=True: CommandResult(
        command, 0, batch_out, "")

    assert h.virsh_batch({"a": ["domstate", "n1"], "b": ["domstate", "gone"],
                          "c": ["domuuid", "n2"]}) == {"a": "running", "b": "", "c": "x y"}


def test_domains_are_read_from_dominfo_and_drover_metadata_and_absent_ones_left_out(host):
    out = ("@@drover@@dominfo:c-cp-1@@" + DOMINFO +
           '@@drover@@meta:c-cp-1@@<node cluster="c" node="c-cp-1" role="controlplane" '
           'pool="cp"/>\n@@drover@@dominfo:c-w-1@@@@drover@@meta:c-w-1@@')
    h, conn = host({})
    seen = []
    conn.run = lambda command, timeout, stdin=None, check=True: (
        seen.append(command), CommandResult(command, 0, out, ""))[1]

    found = h.domains(["c-cp-1", "c-w-1"], "urn:x")

    assert list(found) == ["c-cp-1"]
    assert found["c-cp-1"].state == "running"
    assert found["c-cp-1"].uuid == "4ff5b9ad-20d6-4ee9-a4cc-2da4ce916d2b"
    assert found["c-cp-1"].meta == {"cluster": "c", "node": "c-cp-1", "role": "controlplane",
                                    "pool": "cp"}
    assert len(seen) == 1 and seen[0][:4] == ["virsh", "-q", "-c", "qemu:///system"]


def test_console_matches_are_given_per_file_the_missing_ones_empty(host):
    h, conn = host({})
    conn.run = lambda command, timeout, stdin=None, check=True: CommandResult(
        command, 2, "/s/c/a.console.log:inet 10.0.2.15/24\n", "no such file")

    assert h.grep_consoles({"a": "/s/c/a.console.log", "b": "/s/c/b.console.log"},
                           "inet x") == {"a": ["inet 10.0.2.15/24"], "b": []}


def test_a_boot_file_goes_to_a_host_once_however_many_nodes_ask_at_once(host, tmp_path):
    h, conn = host({}, port=2201)
    local = tmp_path / "vmlinuz"
    local.write_bytes(b"kernel")
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        h.upload_once(local, "ab" * 32, "/s/base"))) for _ in range(6)]
    threads[0].start()
    assert conn.uploading.wait(timeout=30)  # the first upload is under way ...
    for t in threads[1:]:
        t.start()  # ... while the others ask
    conn.release.set()
    for t in threads:
        t.join()

    assert conn.uploads == ["/s/base/abababababababab-vmlinuz"]
    assert set(results) == {"/s/base/abababababababab-vmlinuz"}
    uploads = [s for s in steps.drain("c2201") if s.step == "upload"]
    assert [s.node for s in uploads] == ["10.0.0.1:2201"]


def test_the_ssh_connection_is_recorded_once_per_cluster(host):
    h, conn = host({}, port=2202)
    h.run(["true"])
    h.run(["true"])

    connects = [s for s in steps.drain("c2202") if s.step == "ssh connect"]
    assert [(s.node, s.started, s.seconds) for s in connects] == [("10.0.0.1:2202", 50.0, 0.06)]


def test_private_files_are_written_through_stdin_under_umask_077(host):
    h, conn = host({})
    sent = []
    conn.run = lambda command, timeout, stdin=None, check=True: (
        sent.append((command, stdin)), CommandResult(command, 0, "", ""))[1]

    h.write_private("/s/c/n-cidata.iso", b"ISO")

    [(command, stdin)] = sent
    assert "umask 077" in command[2] and command[-1] == "/s/c/n-cidata.iso" and stdin == b"ISO"
    assert Path("/s/c/n-cidata.iso").name not in command[2]  # the path is an argument, not code


def test_a_boot_file_an_earlier_run_uploaded_is_not_sent_again(host, tmp_path):
    h, conn = host({}, port=2203)
    conn.marked = True
    local = tmp_path / "vmlinux"
    local.write_bytes(b"kernel")

    assert h.upload_once(local, "cd" * 32, "/s/base") == "/s/base/cdcdcdcdcdcdcdcd-vmlinux"
    assert conn.uploads == []
    assert [s.step for s in steps.drain("c2203")] == ["ssh connect", "upload"]


PATHS = {"folder": "/s/c", "console": "/s/c/n1.console.log", "base": "/s/base/b.qcow2",
         "disk": "/s/c/n1.qcow2", "cidata": "/s/c/n1-cidata.iso"}
HOST_OUT = ("@@t0 1000.0\n@@step qemu-img 1000.1 1000.2\n@@step cidata 1000.2 1000.25\n"
            "@@step define 1000.25 1000.3\n@@step start 1000.3 1000.8\n")


def scripted(conn, out: str, status: int = 0, err: str = ""):
    sent = []

    def run(command, timeout, stdin=None, check=True):
        sent.append((command, stdin))
        return CommandResult(command, status, out, err)
    conn.run = run
    return sent


def test_a_node_is_created_in_one_round_trip_its_steps_timed_on_the_host(host):
    h, conn = host({}, port=2204)
    here = h.clock.now()  # the local clock is not the host's: steps are placed from here
    sent = scripted(conn, HOST_OUT)

    assert h.create_domain("n1", PATHS, "10G", b"ISO", "<domain/>", 60.0) is True

    [(command, stdin)] = sent
    assert command[:2] == ["sh", "-c"] and command[3:] == [
        "sh", "qemu:///system", "n1", "/s/c", "/s/c/n1.console.log", "/s/base/b.qcow2",
        "/s/c/n1.qcow2", "10G", "/s/c/n1-cidata.iso", "3"]
    assert stdin == b"ISO<domain/>"  # the cidata's bytes, then the XML: nothing in argv
    taken = [(s.node, s.step, round(s.started - here, 3), round(s.seconds, 3))
             for s in steps.drain("c2204") if s.node == "n1"]
    assert taken == [("n1", "qemu-img", 0.1, 0.1), ("n1", "cidata", 0.2, 0.05),
                     ("n1", "define", 0.25, 0.05), ("n1", "start", 0.3, 0.5)]


def test_an_existing_domain_is_left_as_it_is(host):
    h, conn = host({}, port=2205)
    scripted(conn, "@@t0 1000.0\n@@exists\n")

    assert h.create_domain("n1", PATHS, "10G", b"ISO", "<domain/>", 60.0) is False
    assert [s for s in steps.drain("c2205") if s.node == "n1"] == []


def test_a_failed_define_is_named_and_recorded_as_failed(host):
    h, conn = host({}, port=2206)
    out = "@@t0 1000.0\n@@step qemu-img 1000.1 1000.2\n@@step cidata 1000.2 1000.25\n"
    scripted(conn, out, status=1, err="error: XML error: bad memory unit")

    with pytest.raises(ProviderError, match=r"n1: define failed on 10\.0\.0\.1: .*bad memory"):
        h.create_domain("n1", PATHS, "10G", b"ISO", "<domain/>", 60.0)
    taken = [(s.step, s.ok) for s in steps.drain("c2206") if s.node == "n1"]
    assert taken == [("qemu-img", True), ("cidata", True), ("define", False)]


def test_the_console_is_followed_to_its_first_line_then_the_address(host):
    h, conn = host({}, port=2207)
    sent = scripted(conn, "@@t0 5.0\n@@step first-console-line 5.0 7.5\ninet 10.0.2.15/24\n"
                          "@@step address 7.5 8.0\n")

    assert h.follow_console("n1", "/s/c/n1.console.log", "inet x", 120.0) == "inet 10.0.2.15/24"
    assert sent[0][0][-2:] == ["/s/c/n1.console.log", "inet x"]
    assert [(s.step, s.seconds) for s in steps.drain("c2207") if s.node == "n1"] == [
        ("first console line", 2.5), ("address", 0.5)]


def test_a_console_that_never_shows_the_address_times_out_recorded_as_failed(host):
    h, conn = host({}, port=2208)

    def run(command, timeout, stdin=None, check=True):
        raise CommandTimeout("10.0.0.1:22", command, timeout,
                             "@@t0 5.0\n@@step first-console-line 5.0 6.0\n", "")
    conn.run = run

    with pytest.raises(CommandTimeout):
        h.follow_console("n1", "/s/c/n1.console.log", "inet x", 120.0)
    assert [(s.step, s.ok) for s in steps.drain("c2208") if s.node == "n1"] == [
        ("first console line", True), ("address", False)]
