"""Static compliance: the lab config against cis-1.12, weakening patches, waivers, the spec."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from drover.compliance.catalogue import load_catalogue
from drover.compliance.evaluate import evaluate_spec, refuse_failures
from drover.compliance.result import FAIL, NEEDS_RUNTIME, NOT_APPLICABLE, PASS, WAIVED, WARN
from drover.errors import DroverError, SpecError
from drover.machineconfig.patch import merge_patch
from drover.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
#: what configs/lab.yaml needs for the one Automated control Talos's defaults miss (1.2.30)
LAB_HARDENING = {"cluster": {"apiServer": {"extraArgs": {
    "service-account-extend-token-expiration": "false"}}}}


def lab_data(tmp_path: Path) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "configs" / "lab.yaml").read_text())
    (tmp_path / "patches").mkdir(exist_ok=True)
    (tmp_path / "patches" / "time.yaml").write_text(
        (REPO / "configs" / "patches" / "time.yaml").read_text())
    return data


def spec_of(tmp_path: Path, data: dict[str, Any]):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_spec(path)


def hardened(tmp_path: Path) -> dict[str, Any]:
    """configs/lab.yaml with LAB_HARDENING merged into its control-plane patch (a no-op once
    lab.yaml carries it)."""
    data = lab_data(tmp_path)
    patches = data["spec"]["patches"]["controlPlane"]
    patches[0] = merge_patch(patches[0], LAB_HARDENING)
    return data


def with_patch(data: dict[str, Any], role: str, patch: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data["spec"]["patches"].setdefault(role, []).append(patch)
    return data


def test_lab_config_passes_every_control_it_decides_and_says_why_the_rest_are_not_applicable(
        tmp_path: Path) -> None:
    report = evaluate_spec(spec_of(tmp_path, hardened(tmp_path)))
    catalogue = load_catalogue("cis-1.12")

    assert len(report.results) == len(catalogue.controls) == 131
    assert report.failing() == []
    for result in report.results:
        assert result.status in (PASS, WARN, NOT_APPLICABLE, NEEDS_RUNTIME), result
        if result.status in (NOT_APPLICABLE, NEEDS_RUNTIME, WARN):
            assert len(result.reason) > 20, result.id
        if result.status == PASS:
            assert result.evidence, result.id
    statuses = {r.id: r.status for r in report.results}
    assert all(statuses[f"1.1.{i}"] == NOT_APPLICABLE for i in range(1, 9))
    assert "/etc/kubernetes/manifests" in report.by_id("1.1.1").reason
    assert statuses["4.1.1"] == NOT_APPLICABLE and "systemd" in report.by_id("4.1.1").reason
    assert statuses["4.2.7"] == NOT_APPLICABLE
    # Manual controls Talos's defaults leave to the site are WARN, never FAIL
    assert {c for c, s in statuses.items() if s == WARN} == {"1.2.3", "1.2.9", "1.2.11",
                                                              "1.3.1", "4.2.13"}
    assert report.by_id("1.2.15").evidence == [
        "cp: Talos v1.13 default: kube-apiserver --profiling = 'false'"]
    assert any("benchmark older than cluster" in n for n in report.notes)


def test_talos_defaults_alone_miss_1_2_30_and_the_failure_names_the_fix(tmp_path: Path) -> None:
    data = lab_data(tmp_path)
    report = evaluate_spec(spec_of(tmp_path, data))
    if "service-account-extend-token-expiration" in str(data):
        pytest.skip("configs/lab.yaml already carries the 1.2.30 fix")
    assert [r.id for r in report.failing()] == ["1.2.30"]
    assert "cluster.apiServer.extraArgs.service-account-extend-token-expiration" in \
        report.by_id("1.2.30").paths


WEAKENING = [
    ("4.2.1", "worker", {"machine": {"kubelet": {"extraArgs": {"anonymous-auth": "true"}}}},
     "machine.kubelet.extraArgs.anonymous-auth", "spec.patches.worker[0]"),
    ("1.2.15", "controlPlane", {"cluster": {"apiServer": {"extraArgs": {"profiling": "true"}}}},
     "cluster.apiServer.extraArgs.profiling", "spec.patches.controlPlane[1]"),
    ("1.2.29", "controlPlane", {"cluster": {"apiServer": {"extraArgs": {
        "tls-cipher-suites": "TLS_RSA_WITH_AES_128_CBC_SHA"}}}},
     "cluster.apiServer.extraArgs.tls-cipher-suites", "spec.patches.controlPlane[1]"),
    ("4.2.12", "all", {"machine": {"kubelet": {"extraConfig": {
        "tlsCipherSuites": ["TLS_RSA_WITH_AES_256_CBC_SHA"]}}}},
     "machine.kubelet.extraConfig.tlsCipherSuites", "spec.patches.all[1]"),
    ("1.3.7", "controlPlane", {"cluster": {"controllerManager": {"extraArgs": {
        "bind-address": "0.0.0.0"}}}},
     "cluster.controllerManager.extraArgs.bind-address", "spec.patches.controlPlane[1]"),
    ("4.2.14", "all", {"machine": {"kubelet": {"defaultRuntimeSeccompProfileEnabled": False}}},
     "machine.kubelet.defaultRuntimeSeccompProfileEnabled", "spec.patches.all[1]"),
    ("4.3.1", "controlPlane", {"cluster": {"proxy": {"extraArgs": {
        "metrics-bind-address": "0.0.0.0:10249"}}}},
     "cluster.proxy.extraArgs.metrics-bind-address", "spec.patches.controlPlane[1]"),
]


@pytest.mark.parametrize(("control", "role", "patch", "path", "origin"), WEAKENING,
                         ids=[w[0] for w in WEAKENING])
def test_a_weakening_patch_fails_its_control_with_the_config_path(
        tmp_path: Path, control: str, role: str, patch: dict[str, Any], path: str,
        origin: str) -> None:
    report = evaluate_spec(spec_of(tmp_path, with_patch(hardened(tmp_path), role, patch)))

    assert [r.id for r in report.failing()] == [control]
    failed = report.by_id(control)
    assert failed.paths == [path]
    assert any(path in line and origin in line for line in failed.evidence), failed.evidence
    with pytest.raises(DroverError) as caught:
        refuse_failures(report)
    assert control in str(caught.value) and path in str(caught.value)
    assert "nothing was created" in str(caught.value)


def test_three_weakening_patches_are_each_named_in_the_refusal(tmp_path: Path) -> None:
    data = with_patch(hardened(tmp_path), "all", {"machine": {"kubelet": {"extraArgs": {
        "anonymous-auth": "true"}}}, "cluster": {"apiServer": {"extraArgs": {
            "profiling": "true", "tls-cipher-suites": "TLS_RSA_WITH_3DES_EDE_CBC_SHA"}}}})
    with pytest.raises(DroverError) as caught:
        refuse_failures(evaluate_spec(spec_of(tmp_path, data)))
    message = str(caught.value)
    for control, path in (("4.2.1", "machine.kubelet.extraArgs.anonymous-auth"),
                          ("1.2.15", "cluster.apiServer.extraArgs.profiling"),
                          ("1.2.29", "cluster.apiServer.extraArgs.tls-cipher-suites")):
        assert f"  {control} " in message and path in message


def test_an_override_talos_refuses_fails_and_says_so(tmp_path: Path) -> None:
    data = with_patch(hardened(tmp_path), "controlPlane", {"cluster": {"etcd": {"extraArgs": {
        "client-cert-auth": "false"}}}})
    failed = evaluate_spec(spec_of(tmp_path, data)).by_id("2.2")
    assert failed.status == FAIL and "MergeDenied" in failed.reason


def test_a_waived_control_shows_as_waived_with_its_justification(tmp_path: Path) -> None:
    data = with_patch(hardened(tmp_path), "controlPlane", {"cluster": {"apiServer": {
        "extraArgs": {"profiling": "true"}}}})
    data["spec"]["compliance"] = {"waivers": [{
        "control": "1.2.15", "by": "Jane Auditor",
        "justification": "profiling is needed for the performance investigation INC-42"}]}
    report = evaluate_spec(spec_of(tmp_path, data))

    waived = report.by_id("1.2.15")
    assert waived.status == WAIVED and waived.waived_status == FAIL
    assert waived.waiver == {"by": "Jane Auditor", "justification":
                             "profiling is needed for the performance investigation INC-42"}
    assert refuse_failures(report) is report


@pytest.mark.parametrize(("compliance", "message"), [
    ({"waivers": [{"control": "1.2.15", "by": "me", "justification": "because"}]},
     "write the justification out"),
    ({"waivers": [{"control": "9.9.9", "by": "me", "justification": "x" * 30}]},
     "no such control"),
    ({"waivers": [{"control": "1.2.15", "justification": "x" * 30}]}, "by"),
    ({"benchmark": "cis-0.1"}, "no catalogue for benchmark"),
    ({"level": 3}, "level"),
])
def test_compliance_settings_are_checked_with_the_spec(make_spec, compliance: dict[str, Any],
                                                       message: str) -> None:
    data = make_spec().model_dump(by_alias=True)
    data["spec"]["compliance"] = compliance
    with pytest.raises(SpecError) as caught:
        parse_spec(data, source="test")
    assert message in str(caught.value)


def test_level_2_controls_are_out_of_scope_at_level_1(tmp_path: Path) -> None:
    report = evaluate_spec(spec_of(tmp_path, hardened(tmp_path)))
    assert report.by_id("5.6.4").status == NOT_APPLICABLE
    assert "level 2" in report.by_id("5.6.4").reason


def test_kube_proxy_disabled_makes_4_3_1_not_applicable(tmp_path: Path) -> None:
    data = with_patch(hardened(tmp_path), "controlPlane", {"cluster": {"proxy": {
        "disabled": True}}})
    result = evaluate_spec(spec_of(tmp_path, data)).by_id("4.3.1")
    assert result.status == NOT_APPLICABLE and "disabled" in result.reason
