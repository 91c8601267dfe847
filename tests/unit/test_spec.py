"""The cluster spec: valid configs load; every mistake is reported at once, with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drover.errors import SpecError
from drover.spec import json_schema, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "configs" / "lab.yaml"


def lab_data() -> dict[str, Any]:
    return yaml.safe_load(LAB.read_text())


def problems(data: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, source="x.yaml")
    return caught.value.issues


def test_the_embedded_lab_config_declares_three_control_planes_and_two_workers() -> None:
    spec = load_spec(LAB)
    assert spec.name == "lab"
    assert [(n.name, n.role) for n in spec.declared_nodes()] == [
        ("lab-cp-1", "controlplane"), ("lab-cp-2", "controlplane"), ("lab-cp-3", "controlplane"),
        ("lab-worker-1", "worker"), ("lab-worker-2", "worker")]
    assert spec.spec.deployment.target_minutes == 10
    assert spec.spec.deployment.baseline_minutes == 45


def test_patch_files_are_read_relative_to_the_config() -> None:
    spec = load_spec(LAB)
    assert spec.spec.patches.all == [{"machine": {"sysctls": {"vm.max_map_count": "262144"}}}]


def test_a_missing_patch_file_is_reported_with_its_path(tmp_path: Path) -> None:
    data = lab_data()
    data["spec"]["patches"]["worker"] = ["nope.yaml"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"spec\.patches\.worker\[0\]: patch file .*nope\.yaml"):
        load_spec(tmp_path / "c.yaml")


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["spec"]["controlPlane"].update(count=2),
     "spec.controlPlane.count: must be odd (1, 3, 5) to keep etcd quorum, got 2"),
    (lambda d: d["spec"]["talos"].update(sechematic={}),
     "spec.talos.sechematic: unknown field; did you mean 'schematic'?"),
    (lambda d: d["spec"]["provider"].update(profle="demo"),
     "spec.provider.profle: unknown field; did you mean 'profile'?"),
    (lambda d: d["spec"]["provider"].update(faults=[{"type": "dies", "node": "x",
                                                     "afterSecond": 1}]),
     "spec.provider.faults[0].afterSecond: unknown field; did you mean 'afterSeconds'?"),
    (lambda d: d["spec"]["talos"].update(version=1.13),
     "spec.talos.version: must be text, got the number 1.13; quote it in the YAML"),
    (lambda d: d["spec"]["talos"].update(version="1.13.9"),
     "spec.talos.version: must be a Talos version like v1.13.9, got '1.13.9'"),
    (lambda d: d["metadata"].update(name="Lab_1"),
     "metadata.name: must be lowercase letters, digits and '-' (a DNS label, e.g. lab-1), "
     "got 'Lab_1'"),
    (lambda d: d["spec"]["kubernetes"].pop("endpoint"),
     "spec.kubernetes.endpoint: required field is missing"),
    (lambda d: d["spec"]["kubernetes"].update(podSubnets=["10.244.0.0/33"]),
     "spec.kubernetes.podSubnets: '10.244.0.0/33' is not a CIDR like 10.244.0.0/16"),
    (lambda d: d["spec"].update(workers=[{"name": "a"}, {"name": "a"}]),
     "spec.workers: worker pool names must be unique, repeated: a"),
    (lambda d: d["spec"]["provider"].update(kind="vmware"),
     "spec.provider: Input tag 'vmware' found using 'kind' does not match any of the expected "
     "tags: 'lab', 'libvirt', 'proxmox'"),
    (lambda d: d["spec"].update(provider={"kind": "proxmox", "url": "https://pve:8006",
                                          "nodes": ["pve1"], "tokenId": "drover@pve!ci",
                                          "templateVmID": 9000}),
     "spec.provider.templateVmID: unknown field; did you mean 'templateVmid'?"),
])
def test_each_mistake_is_reported_with_its_yaml_path_and_a_hint(change, expected) -> None:
    data = lab_data()
    change(data)
    assert problems(data) == [expected]


def test_every_mistake_is_reported_at_once() -> None:
    data = lab_data()
    data["spec"]["controlPlane"]["count"] = 4
    data["spec"]["workers"][0]["count"] = -1
    data["spec"]["provider"]["profile"] = "fast"
    data["spec"]["deployment"]["targetMinutes"] = 0
    assert [p.split(":")[0] for p in problems(data)] == [
        "spec.controlPlane.count", "spec.workers[0].count", "spec.provider.profile",
        "spec.deployment.targetMinutes"]


@pytest.mark.parametrize("data, expected", [
    ([], "(top level): must be a mapping with apiVersion, kind, metadata and spec"),
    ({"apiVersion": "drover/v2"}, "apiVersion: must be drover/v1alpha1, got 'drover/v2'"),
])
def test_the_wrong_kind_of_document_is_refused_before_field_checks(data, expected) -> None:
    assert problems(data) == [expected]


def test_unreadable_or_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: .*not valid YAML"):
        load_spec(broken)
    with pytest.raises(SpecError, match=r"missing\.yaml: .*cannot read the file"):
        load_spec(tmp_path / "missing.yaml")


def test_overrides_replace_versions_and_are_validated_too() -> None:
    spec = load_spec(LAB).with_overrides(talos_version="v1.14.0", kubernetes_version="1.37.0")
    assert spec.spec.talos.version == "v1.14.0"
    assert spec.spec.kubernetes.version == "1.37.0"
    with pytest.raises(SpecError, match="spec.talos.version: must be a Talos version"):
        load_spec(LAB).with_overrides(talos_version="latest")


def test_json_schema_describes_the_yaml_with_its_camel_case_names() -> None:
    schema = json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    body = schema["$defs"]["ClusterBody"]["properties"]
    assert {"talos", "kubernetes", "controlPlane", "workers", "patches", "provider",
            "deployment"} <= set(body)
    assert schema["$defs"]["ClusterBody"]["additionalProperties"] is False


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_example_config_is_valid(config: Path) -> None:
    spec = load_spec(config)
    assert spec.spec.provider.kind in config.name
