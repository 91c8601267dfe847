"""Hostile cluster configs, each found by an adversarial pass (issue 7): every one is refused
with the YAML path of the problem, and no message quotes a file's content."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from drover.errors import SpecError
from drover.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "configs" / "lab.yaml"
SECRET = "hunter2-DO-NOT-LEAK"


def lab_data() -> dict[str, Any]:
    return yaml.safe_load(LAB.read_text())


def problems(data: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, source="x.yaml")
    return caught.value.issues


def load_problems(config: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(config)
    return caught.value.issues


def write_config(folder: Path, data: dict[str, Any], name: str = "c.yaml") -> Path:
    """The config in `folder`, with the lab's patch files beside it."""
    (folder / "patches").mkdir(parents=True, exist_ok=True)
    for patch in (REPO / "configs" / "patches").glob("*.yaml"):
        (folder / "patches" / patch.name).write_text(patch.read_text())
    (folder / name).write_text(yaml.safe_dump(data))
    return folder / name


def kube(**fields: Any):
    return lambda d: d["spec"]["kubernetes"].update(fields)


def talos(**fields: Any):
    return lambda d: d["spec"]["talos"].update(fields)


def lab_provider(**fields: Any):
    return lambda d: d["spec"]["provider"].update(fields)


def control_plane_patch(patch: dict[str, Any]):
    return lambda d: d["spec"]["patches"]["controlPlane"].append(patch)


@pytest.mark.parametrize("change, expected", [
    (talos(version="v99.0.0"), "spec.talos.version: Talos 'v99.0.0' is not supported: drover "
                               "renders and checks configs for v1.12.0 to v1.15.x"),
    (talos(version="v1.5.0"), "spec.talos.version: Talos 'v1.5.0' is not supported"),
    (kube(endpoint="https://10.5.0.2:99999"),
     "spec.kubernetes.endpoint: must be an https URL like https://10.5.0.2:6443 with a port "
     "from 1 to 65535, got 'https://10.5.0.2:99999'"),
    (kube(endpoint="https://10.5.0.2:0"), "spec.kubernetes.endpoint: must be an https URL like "
                                          "https://10.5.0.2:6443: the port must be from 1 to "
                                          "65535, got 0"),
    (kube(endpoint="https://user:pw@10.5.0.2:6443"), "spec.kubernetes.endpoint: must be an "
                                                     "https URL"),
    (kube(endpoint="https://bad_host!:6443"), "spec.kubernetes.endpoint: must be an https URL"),
    (kube(podSubnets=["10.96.0.0/16"]),
     "spec.kubernetes.serviceSubnets: 10.96.0.0/12 overlaps podSubnets 10.96.0.0/16: pod, "
     "service and node networks must not overlap"),
    (kube(podSubnets=["10.5.0.0/16"]),
     "spec.provider.network: 10.5.0.0/24 overlaps podSubnets 10.5.0.0/16: pod, service and "
     "node networks must not overlap"),
    (kube(dnsDomain="not a domain/../x"), "spec.kubernetes.dnsDomain: must be a DNS domain"),
    (talos(imageFactory="file:///etc/passwd"),
     "spec.talos.imageFactory: must be an https URL like https://factory.talos.dev, got "
     "'file:///etc/passwd'"),
    (talos(imageFactory="http://factory.talos.dev"), "spec.talos.imageFactory: must use https"),
    (talos(imageFactory="https://u:p@factory.talos.dev"),
     "spec.talos.imageFactory: must not carry credentials"),
    (talos(installDisk="/dev/vda; rm -rf /"), "spec.talos.installDisk: must be a device path "
                                              "like /dev/vda or /dev/disk/by-id/<id>"),
    (talos(installDisk="/dev/../etc/passwd"), "spec.talos.installDisk: must be a device path"),
    (lambda d: d["spec"]["workers"][0]["size"].update(memoryMib=10**15),
     "spec.workers[0].size.memoryMib: Input should be less than or equal to 4194304"),
    (lambda d: d["spec"]["controlPlane"]["size"].update(diskGib=10**6),
     "spec.controlPlane.size.diskGib: Input should be less than or equal to 65536"),
    (lambda d: d["spec"]["controlPlane"].update(count=True),
     "spec.controlPlane.count: must be a whole number, got True (values are not converted)"),
    (lambda d: d["spec"]["workers"][0].update(count="2"),
     "spec.workers[0].count: must be a whole number, got '2' (values are not converted)"),
    (lambda d: d["spec"]["deployment"].update(keepOnFailure="yes"),
     "spec.deployment.keepOnFailure: must be true or false, got 'yes'"),
    (lab_provider(network="10.0.0.0/8"), "spec.provider.network: 10.0.0.0/8 is too large: the "
                                         "lab assigns node addresses from it, so it may be at "
                                         "most a /16 (IPv4)"),
    (lab_provider(network="fd00::/64"), "spec.provider.network: fd00::/64 is too large"),
    (lab_provider(faults=[{"type": "dies", "node": "lab-db-1"}]),
     "spec.provider.faults[0].node: 'lab-db-1' is not a node of this cluster: expected "
     "lab-<pool>-<n> with a pool of cp, worker and n >= 1"),
    (lab_provider(faults=[{"type": "dies", "node": "other-cp-1"}]),
     "spec.provider.faults[0].node: 'other-cp-1' is not a node of this cluster"),
    (lab_provider(faults=[{"type": "dies", "node": "lab-cp-0"}]),
     "spec.provider.faults[0].node: 'lab-cp-0' is not a node of this cluster"),
    (control_plane_patch({"machine": {"type": "worker"}}),
     "spec.patches.controlPlane[1]: machine.type: a patch may not set it; drover owns the "
     "node's role"),
    (control_plane_patch({"cluster": {"secret": None}}),
     "spec.patches.controlPlane[1]: cluster.secret: a patch may not set it; drover owns the "
     "cluster's identity and keys"),
    (control_plane_patch({"cluster": {"etcd": {"ca": {"crt": "x"}}}}),
     "spec.patches.controlPlane[1]: cluster.etcd.ca: a patch may not set it"),
])
def test_each_hostile_value_is_refused_with_its_yaml_path(change, expected: str) -> None:
    data = lab_data()
    change(data)
    found = problems(data)
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize("change", [
    talos(version="v1.12.0"), talos(version="v1.15.2"), talos(version="v1.14.0-rc.1"),
    talos(imageFactory="http://127.0.0.1:8080"), talos(imageFactory="https://factory.test/x/"),
    talos(installDisk="/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S649NF0R123456"),
    talos(installDisk="/dev/disk/by-path/pci-0000:00:1f.2-ata-1"),
    kube(endpoint="https://[fd00::2]:6443"), kube(endpoint="https://api.lab.example"),
    kube(dnsDomain="cluster.local"), lab_provider(network="10.5.0.0/16"),
    lab_provider(network="fd00::/112"),
    lab_provider(faults=[{"type": "never-boots", "node": "lab-worker-9"}]),
])
def test_values_at_the_edge_of_each_rule_are_accepted(change) -> None:
    data = lab_data()
    change(data)
    parse_spec(data, source="x.yaml")


# ---- YAML -----------------------------------------------------------------------------------

#: a billion laughs: ten levels of ten aliases each, 10^10 values once expanded
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
    for p, n in zip("abcdefghi", "bcdefghij", strict=True))


def test_an_alias_bomb_in_a_patch_file_fails_fast(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text("machine:\n  nodeLabels:\n    x: y\n" + "z:\n" + "".join(
        f"  {line}\n" for line in BOMB.splitlines()))
    data = lab_data()
    data["spec"]["patches"]["all"] = ["bomb.yaml"]
    started = time.perf_counter()
    found = load_problems(write_config(tmp_path, data))
    assert time.perf_counter() - started < 0.5
    assert found == ["spec.patches.all[0]: patch file 'bomb.yaml': not allowed at line 9, "
                     "column 6: expands to more than 100000 values (aliases included): too "
                     "large for a config"]


def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    text = LAB.read_text()
    config.write_text(text + "spec:\n  talos: {version: v1.14.0}\n")
    line = len(text.splitlines()) + 1
    assert load_problems(config) == [
        f"not valid YAML at line {line}, column 1: duplicate key 'spec' (first at line 8): "
        "remove one of them"]


def test_a_yaml_error_names_the_line_but_never_quotes_it(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"apiVersion: drover/v1alpha1\npassword: {SECRET}: [oops\n")
    with pytest.raises(SpecError) as caught:
        load_spec(config)
    assert SECRET not in str(caught.value)
    assert caught.value.issues == [
        "not valid YAML at line 2, column 30: mapping values are not allowed here"]


def test_a_patch_file_with_a_yaml_error_is_named_but_never_quoted(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(f"machine:\n  token: '{SECRET}\n")
    data = lab_data()
    data["spec"]["patches"]["worker"] = ["p.yaml"]
    with pytest.raises(SpecError) as caught:
        load_spec(write_config(tmp_path, data))
    assert SECRET not in str(caught.value)
    assert caught.value.issues[0].startswith(
        "spec.patches.worker[0]: patch file 'p.yaml': not valid YAML at line 3, column 1")


def test_a_config_larger_than_a_mebibyte_is_refused_unread(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("# padding\n" * 200_000)
    assert load_problems(config) == ["larger than 1024 KiB: too large for a config"]


# ---- patch files stay in the config's folder ------------------------------------------------

@pytest.mark.parametrize("patch, expected", [
    ("/etc/shadow", "spec.patches.all[0]: patch file '/etc/shadow': an absolute path is not "
                    "allowed; give a path relative to the config's folder"),
    ("../../outside/x.yaml", "spec.patches.all[0]: patch file '../../outside/x.yaml' is outside "
                             "the config's folder"),
    ("out.yaml", "spec.patches.all[0]: patch file 'out.yaml' is outside the config's folder"),
])
def test_a_patch_file_outside_the_config_folder_is_refused(tmp_path: Path, patch: str,
                                                           expected: str) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.yaml").write_text(f"machine:\n  token: {SECRET}\n")
    folder = tmp_path / "a" / "b"
    data = lab_data()
    data["spec"]["patches"]["all"] = [patch]
    config = write_config(folder, data)
    (folder / "out.yaml").symlink_to(tmp_path / "outside" / "x.yaml")
    found = load_problems(config)
    assert len(found) == 1 and found[0].startswith(expected), found
    assert SECRET not in found[0]


def test_a_patch_file_in_a_subfolder_of_the_config_folder_is_read(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "labels.yaml").write_text("machine:\n  nodeLabels: {tier: a}\n")
    data = lab_data()
    data["spec"]["patches"]["worker"] = ["patches/labels.yaml"]
    spec = load_spec(write_config(tmp_path, data))
    assert spec.spec.patches.worker == [{"machine": {"nodeLabels": {"tier": "a"}}}]


# ---- patches against the Talos schema -------------------------------------------------------

@pytest.mark.parametrize("version, patch, expected", [
    ("v1.13.9", {"machine": {"kubelet": {"extraArgz": {"a": "b"}}}},
     "spec.patches.controlPlane[1]: machine.kubelet.extraArgz: unknown field; did you mean "
     "'extraArgs'? (Talos v1.13 schema)"),
    ("v1.15.0", {"cluster": {"apiServer": {"extraArgs": {"v": 2}}}},
     "spec.patches.controlPlane[1]: cluster.apiServer.extraArgs.v: must be text or a list, got "
     "a number (Talos v1.15 schema)"),
    ("v1.13.9", {"machine": {"files": [{"path": "/var/x", "op": "create", "content": "x",
                                        "permissions": 420, "mode": 1}]}},
     "spec.patches.controlPlane[1]: machine.files[0].mode: unknown field (Talos v1.13 schema)"),
    ("v1.13.9", {"machine": {"install": {"wipe": "no"}}},
     "spec.patches.controlPlane[1]: machine.install.wipe: must be true or false, got text "
     "(Talos v1.13 schema)"),
    ("v1.13.9", {"kind": "HostnameConfig"},
     "spec.patches.controlPlane[1]: kind: unknown field (Talos v1.13 schema)"),
])
def test_patches_are_checked_against_the_talos_schema_of_the_target_version(
        tmp_path: Path, version: str, patch: dict[str, Any], expected: str) -> None:
    data = lab_data()
    data["spec"]["talos"]["version"] = version
    data["spec"]["patches"]["controlPlane"].append(patch)
    assert load_problems(write_config(tmp_path, data)) == [expected]


def test_an_unknown_field_in_a_patch_file_is_reported_without_its_value(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(f"machine:\n  kubelet:\n    tokn: {SECRET}\n")
    data = lab_data()
    data["spec"]["patches"]["all"].append("p.yaml")
    found = load_problems(write_config(tmp_path, data))
    assert found == ["spec.patches.all[1]: machine.kubelet.tokn: unknown field (Talos v1.13 "
                     "schema)"]


def test_a_drover_owned_field_in_a_patch_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("machine:\n  type: worker\n")
    data = lab_data()
    data["spec"]["patches"]["controlPlane"] = ["p.yaml"]
    assert load_problems(write_config(tmp_path, data)) == [
        "spec.patches.controlPlane[0]: machine.type: a patch may not set it; drover owns the "
        "node's role: it comes from the pool; put the patch under patches.controlPlane or "
        "patches.worker instead"]


def test_a_version_override_rechecks_the_patches_against_its_schema() -> None:
    data = lab_data()
    data["spec"]["patches"]["controlPlane"] = [{"machine": {"kubelet": {"extraArgz": {}}}}]
    spec = parse_spec(data, source="x.yaml")  # inline, not yet schema-checked
    with pytest.raises(SpecError, match=r"extraArgz: unknown field.*Talos v1\.15 schema"):
        spec.with_overrides(talos_version="v1.15.0")


@pytest.mark.parametrize("version", ["v1.13.9", "v1.14.0", "v1.15.0"])
@pytest.mark.parametrize("patch", sorted((REPO / "configs" / "patches").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_the_shipped_patches_pass_every_supported_schema(tmp_path: Path, patch: Path,
                                                         version: str) -> None:
    (tmp_path / patch.name).write_text(patch.read_text())
    data = lab_data()
    data["spec"]["talos"]["version"] = version
    data["spec"]["patches"]["all"] = [patch.name]
    load_spec(write_config(tmp_path, data))
