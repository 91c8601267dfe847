"""drover.providers.proxmox: contract tests against a fake Proxmox VE API behind
httpx.MockTransport, shaped on the documented API (api2/json).

No Proxmox cluster can run on this machine, so the fake stands in for one: a
stateful server holding VMs, tasks (UPIDs that finish after a few polls), storage
content and the token's permissions, with scriptable faults (5xx or "can't lock
file" n times, a task ending with an error exit status, a guest agent that never
answers). It fakes only what the provider observes. No network, no real sleep:
every wait runs on a ManualClock.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from drover.errors import NodeNotFound, ProviderError, RetriesExhausted, StageTimeout
from drover.lab.clock import ManualClock
from drover.providers import PROVIDERS, open_provider
from drover.providers.proxmox import ProxmoxProvider
from drover.spec import ClusterSpec, parse_spec
from tests.unit.conftest import build_spec

TOKEN_ID = "drover@pve!deploy"
SECRET = "c4n4ry-5ecr3t-0f-the-t0ken"  # a canary: it must show up nowhere but the header
LOCKED = "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
_URLS = itertools.count(1)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    message: str
    times: int


class FakeProxmox:
    """A Proxmox VE cluster as its API shows it: /cluster, /nodes/{node}/qemu, tasks, storage."""

    def __init__(self, nodes: tuple[str, ...] = ("pve1", "pve2"), task_polls: int = 2,
                 agent_polls: int | None = 1, clone_overlap: int = 1,
                 clones_expected: int = 0) -> None:
        self.nodes = nodes
        self.task_polls = task_polls      # status polls until a task stops
        self.agent_polls = agent_polls    # agent asks after start until it answers; None: never
        self.clone_overlap = clone_overlap  # a clone waits briefly for this many at once,
        self.clones_expected = clones_expected  # unless it is the last one expected
        self.lock = threading.Condition(threading.RLock())
        self.vms: dict[int, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.headers: list[str] = []
        self.faults: list[Fault] = []
        self.task_exits: dict[str, list[str]] = {}
        self.permissions: dict[str, dict[str, int]] = {"/vms": {"VM.Audit": 1, "VM.Clone": 1}}
        self.isos: dict[str, set[str]] = {n: set() for n in nodes}  # node -> volids on local
        self.active_clones = self.peak_clones = 0
        self._pids = itertools.count(0x1000)
        self.add_vm(9000, "talos-nocloud", node="pve1", template=True,
                    config={"scsi0": "local-lvm:base-9000-disk-0,size=10G",
                            "net0": "virtio=BC:24:11:00:90:00,bridge=vmbr0"})

    # ---- scripting ----------------------------------------------------------------------

    def add_vm(self, vmid: int, name: str, node: str = "pve1", tags: str = "",
               status: str = "stopped", template: bool = False,
               config: dict[str, Any] | None = None, kind: str = "qemu") -> dict[str, Any]:
        vm = {"vmid": vmid, "name": name, "node": node, "status": status, "type": kind,
              "template": int(template), "agent_asks": 0,
              "config": {"name": name, "tags": tags, **(config or {})}}
        self.vms[vmid] = vm
        return vm

    def fail(self, method: str, path: str, status: int, message: str, times: int = 1) -> None:
        self.faults.append(Fault(method, re.compile(path), status, message, times))

    def fail_task(self, kind: str, exitstatus: str, times: int = 1) -> None:
        self.task_exits.setdefault(kind, []).extend([exitstatus] * times)

    def posts(self, pattern: str = "") -> list[tuple[str, str, dict[str, str]]]:
        return [c for c in self.calls if c[0] != "GET" and re.search(pattern, c[1])]

    def vm_named(self, name: str) -> dict[str, Any]:
        return next(vm for vm in self.vms.values() if vm["name"] == name)

    # ---- the HTTP side ------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api2/json")
        params = dict(request.url.params) | dict(parse_qsl(request.content.decode()))
        with self.lock:
            self.calls.append((request.method, path, params))
            self.headers.append(request.headers.get("Authorization", ""))
            if request.headers.get("Authorization") != f"PVEAPIToken={TOKEN_ID}={SECRET}":
                return _error(401, "authentication failure")
            for fault in self.faults:
                if fault.times and fault.method == request.method and fault.path.search(path):
                    fault.times -= 1
                    return _error(fault.status, fault.message)
            for method, pattern, route in self.routes:
                m = re.fullmatch(pattern, path)
                if m and method == request.method:
                    try:
                        return httpx.Response(200, json={"data": route(self, params,
                                                                       **m.groupdict())})
                    except ApiError as exc:
                        return _error(exc.status, exc.message, exc.errors)
            return _error(501, f"Method '{request.method} {path}' not implemented")

    def _vm(self, node: str, vmid: str) -> dict[str, Any]:
        vm = self.vms.get(int(vmid))
        if vm is None or vm["node"] != node:
            raise ApiError(500, f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' "
                           "does not exist")
        return vm

    def _task(self, node: str, kind: str, vmid: Any, done: Any = None, failed: Any = None) -> str:
        upid = (f"UPID:{node}:{next(self._pids):08X}:0000AB12:6700FF00:{kind}:{vmid}:"
                f"{TOKEN_ID}:")
        exits = self.task_exits.get(kind) or []
        self.tasks[upid] = {"node": node, "type": kind, "polls": self.task_polls,
                            "exit": exits.pop(0) if exits else "OK", "done": done,
                            "failed": failed, "status": "running"}
        return upid

    # ---- routes -------------------------------------------------------------------------

    def permissions_get(self, params: dict[str, str]) -> Any:
        return self.permissions

    def resources(self, params: dict[str, str]) -> Any:
        assert params.get("type") == "vm"
        rows = []
        for vm in self.vms.values():
            row = {"id": f"{vm['type']}/{vm['vmid']}", "type": vm["type"], "vmid": vm["vmid"],
                   "name": vm["name"], "node": vm["node"], "status": vm["status"],
                   "template": vm["template"]}
            if vm["config"].get("tags"):
                row["tags"] = vm["config"]["tags"]
            rows.append(row)
        return rows

    def nextid(self, params: dict[str, str]) -> Any:
        if "vmid" in params:
            if int(params["vmid"]) in self.vms:
                raise ApiError(400, "Parameter verification failed.",
                               {"vmid": f"VM {params['vmid']} already exists"})
            return params["vmid"]
        return str(next(i for i in itertools.count(100) if i not in self.vms))

    def create(self, params: dict[str, str], node: str) -> Any:
        vmid = int(params["vmid"])
        if vmid in self.vms:
            raise ApiError(500, f"unable to create VM {vmid}: config file already exists")
        config = {k: v for k, v in params.items() if k not in ("vmid", "pool")}
        vm = self.add_vm(vmid, params["name"], node=node, config=config)
        vm["config"]["net0"] = _with_mac(params["net0"], vmid)
        return self._task(node, "qmcreate", vmid, failed=lambda: self.vms.pop(vmid))

    def clone(self, params: dict[str, str], node: str, vmid: str) -> Any:
        source = self._vm(node, vmid)
        newid = int(params["newid"])
        if newid in self.vms:
            raise ApiError(500, f"unable to create VM {newid}: config file already exists")
        config = {**source["config"], "name": params["name"], "tags": "",
                  "description": params.get("description", ""), "lock": "clone",
                  "net0": _with_mac(source["config"]["net0"], newid)}
        self.add_vm(newid, params["name"], node=params.get("target", node), config=config)
        self.active_clones += 1
        self.peak_clones = max(self.peak_clones, self.active_clones)
        self.lock.notify_all()
        self.clones_expected -= 1
        # Hold the answer a moment so that clones a client does not hold back pile up here:
        # a fake cannot see a client waiting, only what arrives within the window.
        self.lock.wait_for(lambda: self.active_clones >= self.clone_overlap
                           or self.clones_expected <= 0, timeout=0.15)

        def finish() -> None:
            self.active_clones -= 1
            self.lock.notify_all()

        def done() -> None:
            finish()
            self.vms[newid]["config"].pop("lock", None)

        def failed() -> None:
            finish()
            self.vms.pop(newid, None)
        return self._task(node, "qmclone", vmid, done=done, failed=failed)

    def config_get(self, params: dict[str, str], node: str, vmid: str) -> Any:
        return {**self._vm(node, vmid)["config"], "digest": "0" * 40}

    def config_post(self, params: dict[str, str], node: str, vmid: str) -> Any:
        vm = self._vm(node, vmid)
        if vm["config"].get("lock"):
            raise ApiError(500, f"VM {vmid} is locked ({vm['config']['lock']})")
        if "net0" in params:
            params = {**params, "net0": _with_mac(params["net0"], int(vmid))}
        return self._task(node, "qmconfig", vmid, done=lambda: vm["config"].update(params))

    def resize(self, params: dict[str, str], node: str, vmid: str) -> Any:
        vm = self._vm(node, vmid)
        disk = params["disk"]

        def done() -> None:
            vm["config"][disk] = re.sub(r"size=[^,]+", f"size={params['size']}",
                                        vm["config"][disk])
        return self._task(node, "resize", vmid, done=done)

    def start(self, params: dict[str, str], node: str, vmid: str) -> Any:
        vm = self._vm(node, vmid)

        def done() -> None:
            vm.update(status="running", agent_asks=0)
        return self._task(node, "qmstart", vmid, done=done)

    def stop(self, params: dict[str, str], node: str, vmid: str) -> Any:
        vm = self._vm(node, vmid)
        return self._task(node, "qmstop", vmid, done=lambda: vm.update(status="stopped"))

    def destroy(self, params: dict[str, str], node: str, vmid: str) -> Any:
        vm = self._vm(node, vmid)
        if vm["status"] == "running":
            raise ApiError(500, f"VM {vmid} is running - destroy failed")
        assert params.get("purge") == "1"
        return self._task(node, "qmdestroy", vmid, done=lambda: self.vms.pop(int(vmid)))

    def agent(self, params: dict[str, str], node: str, vmid: str) -> Any:
        vm = self._vm(node, vmid)
        if vm["status"] != "running":
            raise ApiError(500, f"VM {vmid} is not running")
        vm["agent_asks"] += 1
        if self.agent_polls is None or vm["agent_asks"] <= self.agent_polls:
            raise ApiError(500, "QEMU guest agent is not running")
        mac = re.search(r"=([0-9A-F:]{17})", vm["config"]["net0"])[1]  # type: ignore[index]
        return {"result": [
            {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}]},
            {"name": "cni0", "hardware-address": "0a:58:0a:f4:00:01", "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "10.244.0.1", "prefix": 24}]},
            {"name": "eth0", "hardware-address": mac.lower(), "ip-addresses": [
                {"ip-address-type": "ipv6", "ip-address": "fe80::be24:11ff:fe00:1%eth0",
                 "prefix": 64},
                {"ip-address-type": "ipv4", "ip-address": "169.254.10.1", "prefix": 16},
                {"ip-address-type": "ipv4", "ip-address": "10.5.0.2", "prefix": 24},  # VIP
                {"ip-address-type": "ipv4", "ip-address": f"10.5.0.{int(vmid) - 90}",
                 "prefix": 24}]}]}

    def task_status(self, params: dict[str, str], node: str, upid: str) -> Any:
        task = self.tasks.get(upid)
        if task is None or task["node"] != node:
            raise ApiError(500, f"no such task '{upid}'")
        if task["status"] == "running":
            task["polls"] -= 1
            if task["polls"] <= 0:
                task["status"] = "stopped"
                ok = task["exit"] == "OK" or task["exit"].startswith("WARNINGS")
                effect = task["done"] if ok else task["failed"]
                if effect:
                    effect()
        answer = {"upid": upid, "node": node, "type": task["type"], "status": task["status"]}
        if task["status"] == "stopped":
            answer["exitstatus"] = task["exit"]
        return answer

    def storages(self, params: dict[str, str], node: str) -> Any:
        assert params.get("content") == "iso"
        return [{"storage": "local", "type": "dir", "content": "iso,vztmpl,backup",
                 "active": 1, "enabled": 1}]

    def content(self, params: dict[str, str], node: str, storage: str) -> Any:
        return [{"volid": v, "content": "iso", "format": "iso"} for v in self.isos[node]]

    def download(self, params: dict[str, str], node: str, storage: str) -> Any:
        assert params["content"] == "iso" and params["url"].startswith("https://")
        volid = f"{storage}:iso/{params['filename']}"
        return self._task(node, "download", params["filename"],
                          done=lambda: self.isos[node].add(volid))

    routes: list[tuple[str, str, Any]] = [
        ("GET", r"/access/permissions", permissions_get),
        ("GET", r"/cluster/resources", resources),
        ("GET", r"/cluster/nextid", nextid),
        ("POST", r"/nodes/(?P<node>[^/]+)/qemu", create),
        ("POST", r"/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/clone", clone),
        ("GET", r"/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/config", config_get),
        ("POST", r"/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/config", config_post),
        ("PUT", r"/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/resize", resize),
        ("POST", r"/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/status/start", start),
        ("POST", r"/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/status/stop", stop),
        ("DELETE", r"/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)", destroy),
        ("GET", r"/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/agent/network-get-interfaces", agent),
        ("GET", r"/nodes/(?P<node>[^/]+)/tasks/(?P<upid>[^/]+)/status", task_status),
        ("GET", r"/nodes/(?P<node>[^/]+)/storage", storages),
        ("GET", r"/nodes/(?P<node>[^/]+)/storage/(?P<storage>[^/]+)/content", content),
        ("POST", r"/nodes/(?P<node>[^/]+)/storage/(?P<storage>[^/]+)/download-url", download),
    ]


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        self.status, self.message, self.errors = status, message, errors


def _error(status: int, message: str, errors: dict[str, str] | None = None) -> httpx.Response:
    """Proxmox puts the reason in the status line, and the body holds `data: null`."""
    body: dict[str, Any] = {"data": None, "message": f"{message}\n"}
    if errors:
        body["errors"] = errors
    return httpx.Response(status, json=body,
                          extensions={"reason_phrase": message.encode("latin-1", "replace")})


def _with_mac(net: str, vmid: int) -> str:
    """Proxmox adds a generated MAC to a NIC configured without one."""
    if re.search(r"=[0-9A-F:]{17}", net):
        return net
    model, _, rest = net.partition(",")
    return f"{model}=BC:24:11:00:{vmid // 256 % 256:02X}:{vmid % 256:02X},{rest}"


# ---- fixtures ----------------------------------------------------------------------------


def proxmox_spec(**settings: Any) -> ClusterSpec:
    """The conftest demo cluster (3 control planes, 2 workers) on a Proxmox provider."""
    data = build_spec(name="demo").model_dump(by_alias=True)
    data["spec"]["provider"] = {"kind": "proxmox", "url": f"https://pve-{next(_URLS)}.test:8006",
                                "nodes": ["pve1", "pve2"], "tokenId": TOKEN_ID, **settings}
    return parse_spec(data, source="test")


@pytest.fixture
def fake() -> FakeProxmox:
    return FakeProxmox()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


def open_pve(fake: FakeProxmox, clock: ManualClock, spec: ClusterSpec | None = None,
             **options: Any) -> ProxmoxProvider:
    spec = spec or proxmox_spec(templateVmid=9000)
    client = httpx.Client(transport=httpx.MockTransport(fake.handler))
    return ProxmoxProvider(spec, client=client, clock=clock, token_secret=SECRET,
                           address_timeout=300, **options)


@pytest.fixture
def pve(fake: FakeProxmox, clock: ManualClock) -> ProxmoxProvider:
    return open_pve(fake, clock)


def spec_node(provider: ProxmoxProvider, name: str = "demo-cp-1"):
    return provider.spec.node_named(name)


IMAGE = "factory.talos.dev/metal-installer/" + "ab" * 32 + ":v1.13.9"


# ---- token and TLS ------------------------------------------------------------------------


def test_every_request_carries_the_pve_api_token_header(fake, pve):
    pve.list_nodes()

    assert fake.headers and set(fake.headers) == {f"PVEAPIToken={TOKEN_ID}={SECRET}"}


def test_the_secret_never_appears_in_logs_or_errors(fake, clock, caplog):
    caplog.set_level(logging.DEBUG)
    pve = open_pve(fake, clock)
    pve.create_node(spec_node(pve), IMAGE)
    fake.fail("POST", r"/status/stop$", 403, "Permission check failed (/vms/100, VM.PowerMgmt)")

    with pytest.raises(ProviderError) as err:
        pve.delete_node("demo-cp-1")

    assert "HTTP 403" in str(err.value)
    for text in (caplog.text, str(err.value), repr(err.value), repr(pve), repr(pve.__dict__)):
        assert SECRET not in text


def test_a_secret_echoed_by_the_server_is_scrubbed_from_the_error(fake, pve):
    fake.fail("GET", r"^/access/permissions$", 400, f"bad token value '{SECRET}'")

    with pytest.raises(ProviderError) as err:
        pve.list_nodes()

    assert "GET /access/permissions: HTTP 400: bad token value '***'" in str(err.value)


def test_missing_token_environment_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("PVE_SECRET", raising=False)
    spec = proxmox_spec(tokenSecretEnv="PVE_SECRET")

    with pytest.raises(ProviderError, match=r"environment variable PVE_SECRET is not set"):
        ProxmoxProvider(spec)


def test_token_secret_comes_from_the_named_environment_variable(monkeypatch, fake, clock):
    monkeypatch.setenv("PVE_SECRET", SECRET)
    spec = proxmox_spec(tokenSecretEnv="PVE_SECRET")
    client = httpx.Client(transport=httpx.MockTransport(fake.handler))

    ProxmoxProvider(spec, client=client, clock=clock).list_nodes()

    assert fake.headers[-1] == f"PVEAPIToken={TOKEN_ID}={SECRET}"


def test_plain_http_and_unreadable_ca_files_are_refused(tmp_path):
    with pytest.raises(ProviderError, match=r"must be https://"):
        ProxmoxProvider(proxmox_spec(url="http://pve.test:8006"), token_secret=SECRET)
    with pytest.raises(ProviderError, match=r"caFile: cannot load"):
        ProxmoxProvider(proxmox_spec(caFile=str(tmp_path / "none.pem")), token_secret=SECRET)


def test_open_provider_picks_proxmox_from_the_spec(monkeypatch):
    monkeypatch.setenv("PROXMOX_TOKEN_SECRET", SECRET)

    provider = open_provider(proxmox_spec())

    assert isinstance(provider, ProxmoxProvider) and provider.kind == "proxmox"
    assert "proxmox" in PROVIDERS.factories


def test_a_token_without_vm_audit_is_refused_rather_than_seeing_no_vms(fake, pve):
    fake.permissions = {"/storage": {"Datastore.Audit": 1}}

    with pytest.raises(ProviderError, match=r"lacks VM\.Audit on /vms"):
        pve.list_nodes()


# ---- create -------------------------------------------------------------------------------


def test_create_node_clones_configures_starts_and_reads_the_address(fake, pve):
    node = pve.create_node(spec_node(pve), IMAGE)

    assert node.name == "demo-cp-1" and node.cluster == "demo"
    assert (node.role, node.pool, node.state) == ("controlplane", "cp", "running")
    vm = fake.vm_named("demo-cp-1")
    assert node.address == f"10.5.0.{vm['vmid'] - 90}"  # eth0: not lo, cni0, link-local or VIP
    steps = [(m, re.sub(r"UPID:[^/]+", "UPID", p)) for m, p, _ in fake.calls
             if not p.startswith(("/cluster/resources", "/access"))]
    assert [s for s in steps if s[0] != "GET" or "nextid" in s[1] or "agent" in s[1]] == [
        ("GET", "/cluster/nextid"),
        ("POST", "/nodes/pve1/qemu/9000/clone"),
        ("POST", f"/nodes/pve1/qemu/{vm['vmid']}/config"),
        ("PUT", f"/nodes/pve1/qemu/{vm['vmid']}/resize"),
        ("POST", f"/nodes/pve1/qemu/{vm['vmid']}/status/start"),
        ("GET", f"/nodes/pve1/qemu/{vm['vmid']}/agent/network-get-interfaces"),
        ("GET", f"/nodes/pve1/qemu/{vm['vmid']}/agent/network-get-interfaces")]
    assert all(task["status"] == "stopped" for task in fake.tasks.values())  # each polled out
    config = vm["config"]
    assert config["tags"] == "cluster-demo;drover" and vm["status"] == "running"
    assert (config["scsihw"], config["balloon"]) == ("virtio-scsi-pci", "0")
    assert (config["cores"], config["memory"]) == ("2", "4096")
    assert config["net0"].endswith(",bridge=vmbr0") and config["agent"] == "enabled=1"
    assert config["scsi0"].endswith("size=20G")  # grown from the template's 10G
    clone = fake.posts(r"/clone$")[0][2]
    assert clone["full"] == "1" and clone["storage"] == "local-lvm"
    assert "drover: cluster demo, node demo-cp-1" in clone["description"]


def test_a_nocloud_snippet_is_attached_as_cloud_init_user_data(fake, clock):
    pve = open_pve(fake, clock, user_data=lambda node: f"local:snippets/{node.name}.yaml")

    pve.create_node(spec_node(pve), IMAGE)

    config = fake.vm_named("demo-cp-1")["config"]
    assert config["cicustom"] == "user=local:snippets/demo-cp-1.yaml"
    assert (config["ide0"], config["ipconfig0"]) == ("local-lvm:cloudinit", "ip=dhcp")


def test_create_node_without_a_template_boots_the_factory_iso(fake, clock):
    pve = open_pve(fake, clock, spec=proxmox_spec())

    assert pve.prepare_image(IMAGE) == IMAGE  # the handle stays the installer image
    assert pve.prepare_image(IMAGE) == IMAGE
    node = pve.create_node(spec_node(pve, "demo-worker-1"), IMAGE)

    downloads = fake.posts(r"/download-url$")
    assert len(downloads) == 2  # once per Proxmox node, not again
    assert downloads[0][2]["url"] == ("https://factory.talos.dev/image/" + "ab" * 32
                                      + "/v1.13.9/metal-amd64.iso")
    created = fake.posts(r"^/nodes/pve1/qemu$")[0][2]
    iso = f"local:iso/talos-{'ab' * 6}-v1.13.9-metal-amd64.iso"
    assert created["ide2"] == f"{iso},media=cdrom" and created["boot"] == "order=scsi0;ide2"
    assert created["scsi0"] == "local-lvm:40" and created["scsihw"] == "virtio-scsi-pci"
    assert (created["cores"], created["memory"], created["balloon"]) == ("4", "8192", "0")
    assert created["tags"] == "cluster-demo;drover"
    assert (node.role, node.state) == ("worker", "running") and node.address


def test_create_node_is_a_noop_when_the_node_exists(fake, pve):
    first = pve.create_node(spec_node(pve), IMAGE)
    mutations = len(fake.posts())

    again = pve.create_node(spec_node(pve), IMAGE)

    assert again == first and len(fake.posts()) == mutations
    assert len([vm for vm in fake.vms.values() if vm["name"] == "demo-cp-1"]) == 1


def test_create_node_finishes_a_vm_an_earlier_run_cloned_but_never_configured(fake, pve):
    fake.add_vm(120, "demo-cp-1", node="pve1", config={
        "description": "drover: cluster demo, node demo-cp-1",
        "scsi0": "local-lvm:vm-120-disk-0,size=20G", "net0": "virtio=BC:24:11:00:00:78,br=x"})

    node = pve.create_node(spec_node(pve), IMAGE)

    assert not fake.posts(r"/clone$") and fake.posts(r"/qemu/120/config$")
    assert node.state == "running" and fake.vms[120]["config"]["tags"] == "cluster-demo;drover"
    assert fake.vms[120]["config"]["net0"] == "virtio=BC:24:11:00:00:78,bridge=vmbr0"  # same MAC


def test_create_node_refuses_a_name_taken_by_a_vm_of_no_drover_cluster(fake, pve):
    fake.add_vm(130, "demo-cp-1", node="pve2", tags="prod")

    with pytest.raises(ProviderError, match=r"demo-cp-1: the name is taken by VM 130 on pve2"):
        pve.create_node(spec_node(pve), IMAGE)
    assert not fake.posts()


def test_nodes_are_spread_round_robin_over_the_proxmox_nodes(fake, pve):
    placed = [pve.create_node(spec_node(pve, f"demo-cp-{i}"), IMAGE) for i in (1, 2, 3)]

    assert [fake.vm_named(n.name)["node"] for n in placed] == ["pve1", "pve2", "pve1"]
    assert fake.posts(r"/clone$")[1][2]["target"] == "pve2"


# ---- list, get, delete -------------------------------------------------------------------


def test_list_nodes_returns_only_this_clusters_vms_sorted(fake, pve):
    pve.create_node(spec_node(pve, "demo-worker-1"), IMAGE)
    pve.create_node(spec_node(pve, "demo-cp-1"), IMAGE)
    fake.add_vm(200, "other-cp-1", tags="drover;cluster-other", status="running")
    fake.add_vm(201, "demo-cp-9", tags="cluster-demo")  # not drover's
    fake.add_vm(202, "web", tags="drover")
    fake.add_vm(203, "demo-cp-7", tags="drover;cluster-demo", kind="lxc")

    nodes = pve.list_nodes()

    assert [(n.name, n.role, n.pool) for n in nodes] == [
        ("demo-cp-1", "controlplane", "cp"), ("demo-worker-1", "worker", "worker")]
    assert all(n.address.startswith("10.5.0.") for n in nodes)


def test_get_node_of_an_absent_vm_raises_node_not_found(pve):
    with pytest.raises(NodeNotFound, match=r"demo-cp-4: no VM of cluster demo"):
        pve.get_node("demo-cp-4")


def test_delete_node_stops_and_destroys_with_purge(fake, pve):
    pve.create_node(spec_node(pve), IMAGE)
    vmid = fake.vm_named("demo-cp-1")["vmid"]

    pve.delete_node("demo-cp-1")

    assert vmid not in fake.vms
    stop, destroy = fake.posts()[-2:]
    assert stop[1].endswith(f"/{vmid}/status/stop")
    assert destroy[0] == "DELETE" and destroy[2]["purge"] == "1"
    with pytest.raises(NodeNotFound):
        pve.get_node("demo-cp-1")


def test_delete_node_is_noop_when_absent(fake, pve):
    fake.add_vm(130, "demo-cp-1", tags="prod")  # same name, not ours: left alone

    pve.delete_node("demo-cp-1")
    pve.delete_node("demo-cp-2")

    assert not fake.posts() and 130 in fake.vms


# ---- faults --------------------------------------------------------------------------------


def test_lock_timeouts_and_5xx_are_retried_then_succeed(fake, pve, clock):
    fake.fail("POST", r"/clone$", 500, LOCKED.format(vmid=9000), times=2)
    fake.fail("POST", r"/config$", 503, "Service Unavailable")
    fake.fail("GET", r"^/cluster/resources$", 502, "Bad Gateway")
    started = clock.now()

    node = pve.create_node(spec_node(pve), IMAGE)

    assert node.state == "running"
    assert len(fake.posts(r"/clone$")) == 3 and len(fake.posts(r"/config$")) == 2
    assert clock.now() > started  # waited with backoff, on the injected clock


def test_a_lock_error_as_a_task_exit_status_is_retried(fake, pve):
    fake.fail_task("qmstart", LOCKED.format(vmid=100))

    assert pve.create_node(spec_node(pve), IMAGE).state == "running"
    assert len(fake.posts(r"/status/start$")) == 2


def test_a_5xx_that_persists_ends_in_retries_exhausted(fake, pve):
    fake.fail("GET", r"^/cluster/resources$", 500, "proxy loop", times=99)

    with pytest.raises(RetriesExhausted, match=r"GET /cluster/resources: HTTP 500"):
        pve.list_nodes()


def test_a_4xx_is_a_provider_error_naming_the_call_and_not_retried(fake, pve):
    fake.fail("POST", r"/clone$", 403, "Permission check failed (/vms/9000, VM.Clone)", times=9)

    with pytest.raises(ProviderError) as err:
        pve.create_node(spec_node(pve), IMAGE)

    assert "POST /nodes/pve1/qemu/9000/clone: HTTP 403: Permission check failed" in str(err.value)
    assert len(fake.posts(r"/clone$")) == 1


def test_a_task_ending_with_an_error_exit_status_raises_with_it(fake, pve):
    fake.fail_task("qmstart", "start failed: QEMU exited with code 1")

    with pytest.raises(ProviderError, match=r"start VM \d+: task UPID:pve1:.* failed: "
                                            r"start failed: QEMU exited with code 1"):
        pve.create_node(spec_node(pve), IMAGE)


def test_a_task_ending_with_warnings_counts_as_success(fake, pve):
    fake.fail_task("qmstart", "WARNINGS: 1")

    assert pve.create_node(spec_node(pve), IMAGE).state == "running"
    assert len(fake.posts(r"/status/start$")) == 1


def test_no_address_from_the_guest_agent_is_an_error_after_the_timeout(clock):
    fake = FakeProxmox(agent_polls=None)
    pve = open_pve(fake, clock)
    started, real = clock.now(), time.monotonic()

    with pytest.raises(StageTimeout, match=r"demo-cp-1: address: .* no usable address .* 300s"):
        pve.create_node(spec_node(pve), IMAGE)

    assert clock.now() - started >= 300 and time.monotonic() - real < 2
    assert pve.get_node("demo-cp-1").address == ""  # never a made-up address


def test_parallel_clones_are_bounded_by_max_parallel_clones(clock):
    fake = FakeProxmox(clone_overlap=3, clones_expected=4)  # would pile up beyond the bound
    pve = open_pve(fake, clock, spec=proxmox_spec(templateVmid=9000, maxParallelClones=2))
    names = ["demo-cp-1", "demo-cp-2", "demo-cp-3", "demo-worker-1"]
    errors: list[BaseException] = []

    def create(name: str) -> None:
        try:
            pve.create_node(spec_node(pve, name), IMAGE)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert not errors
    assert fake.peak_clones == 2  # they did overlap, and never beyond the bound
    assert sorted(n.name for n in pve.list_nodes()) == sorted(names)
    assert len({vm["vmid"] for vm in fake.vms.values()}) == len(fake.vms)
