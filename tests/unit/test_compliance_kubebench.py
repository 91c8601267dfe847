"""kube-bench JSON triaged against the catalogue; reports, exports, history, the lab's run."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml
from typer.testing import CliRunner

from drover.cli_compliance import compliance_app
from drover.compliance.evaluate import evaluate_spec
from drover.compliance.history import ComplianceHistory
from drover.compliance.kubebench import merge, parse_kube_bench, triage
from drover.compliance.report import junit_xml, markdown, table_rows
from drover.compliance.result import (
    FAIL,
    FALSE_POSITIVE,
    INFO,
    NEEDS_RUNTIME,
    PASS,
    UNKNOWN,
    WAIVED,
    WARN,
)
from drover.compliance.runtime import MOUNTS, job_manifest
from drover.errors import DroverError
from drover.kube import LabKube
from drover.lab.clock import ManualClock
from drover.spec import parse_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-bench"


def triaged(name: str, spec, static: bool = True):
    text = (FIXTURES / name).read_text()
    return triage(parse_kube_bench(text, name), spec.spec.compliance, spec.name,
                  spec.spec.talos.version, spec.spec.kubernetes.version,
                  static=evaluate_spec(spec) if static else None)


def statuses(report) -> dict[str, str]:
    return {r.id: r.status for r in report.results}


def test_kubeadm_failures_are_genuine_and_an_unknown_id_is_reported(make_spec) -> None:
    report = triaged("kubeadm-failures.json", make_spec())
    got = statuses(report)

    assert {c for c, s in got.items() if s == FAIL} == {"1.2.15", "1.2.16", "1.2.17",
                                                        "1.2.30", "1.3.2", "1.4.1"}
    assert got["1.2.6"] == PASS and got["4.2.1"] == PASS
    # kube-bench's findings on files Talos does not have are Talos false positives
    assert got["1.1.12"] == FALSE_POSITIVE and got["1.2.5"] == FALSE_POSITIVE
    assert got["1.2.1"] == WARN and got["1.2.29"] == WARN
    unknown = report.by_id("5.7.4")
    assert unknown.status == UNKNOWN and "not a control of cis-1.12" in unknown.reason
    assert unknown.section == "5.7"
    assert len(report.results) == 21  # nothing dropped


def test_a_talos_run_full_of_false_positives_leaves_only_the_genuine_failure(make_spec) -> None:
    report = triaged("talos-false-positives.json", make_spec())
    got = statuses(report)

    assert [c for c, s in got.items() if s == FAIL] == ["1.2.30"]
    for control in ("1.1.1", "1.1.8", "1.1.13", "1.1.21", "4.1.1", "4.1.2", "4.2.7", "4.2.9"):
        assert got[control] == FALSE_POSITIVE
        assert report.by_id(control).reason.startswith("not applicable on Talos")
    for control in ("1.2.6", "1.2.7", "1.2.8"):
        assert got[control] == FALSE_POSITIVE
        assert "--authorization-config" in report.by_id(control).reason
        assert any(e.startswith("static: cp:") for e in report.by_id(control).evidence)
    assert got["4.2.12"] == FALSE_POSITIVE and got["1.1.12"] == FALSE_POSITIVE
    assert got["1.2.2"] == INFO and got["5.2.1"] == WARN
    assert got["1.2.15"] == PASS


def test_without_static_evidence_the_catalogue_still_names_false_positives(make_spec) -> None:
    got = statuses(triaged("talos-false-positives.json", make_spec(), static=False))
    assert got["1.2.6"] == FALSE_POSITIVE and got["1.1.1"] == FALSE_POSITIVE


def test_a_waiver_covers_a_kube_bench_failure(make_spec) -> None:
    data = make_spec().model_dump(by_alias=True)
    data["spec"]["compliance"] = {"waivers": [{
        "control": "1.2.30", "by": "Sam Platform",
        "justification": "legacy clients rely on extended tokens until Q3 migration"}]}
    report = triaged("talos-false-positives.json", parse_spec(data, source="test"))
    assert report.by_id("1.2.30").status == WAIVED
    assert report.by_id("1.2.30").waiver["by"] == "Sam Platform"
    assert report.failing() == []


@pytest.mark.parametrize(("text", "problem"), [
    ((FIXTURES / "truncated.json").read_text(), "invalid JSON at line 1"),
    ('{"Totals": {}}', 'no "Controls" list'),
    ('{"Controls": [{"id": "1"}]}', 'Controls[0] has no "tests" list'),
    ('[{"tests": [{"section": "1.1"}]}]', 'Controls[0].tests[0] has no "results" list'),
    ('[{"tests": [{"results": [{"status": "PASS"}]}]}]', 'has no "test_number"'),
    ('[{"tests": [{"results": [{"test_number": "1.1.1", "status": "MAYBE"}]}]}]',
     "status must be one of"),
])
def test_a_malformed_file_is_a_clear_error_naming_it(text: str, problem: str) -> None:
    with pytest.raises(DroverError) as caught:
        parse_kube_bench(text, "results/node-1.json")
    message = str(caught.value)
    assert message.startswith("results/node-1.json: not kube-bench JSON output")
    assert problem in message and "kube-bench run --json" in message


def test_the_bare_list_nototals_prints_is_accepted() -> None:
    data = json.loads((FIXTURES / "kubeadm-failures.json").read_text())["Controls"]
    assert len(parse_kube_bench(json.dumps(data), "x")) == 21


def test_reports_count_per_section_and_export_markdown_json_and_junit(make_spec,
                                                                       tmp_path: Path) -> None:
    spec = make_spec()
    report = merge(evaluate_spec(spec), triaged("kubeadm-failures.json", spec))
    rows = {row["section"]: row for row in table_rows(report)}
    assert rows["1.2 API Server"][FAIL] == 4
    assert rows["total"][UNKNOWN] == 1
    assert sum(rows["total"][s] for s in rows["total"] if s != "section") == 132

    text = markdown(report)
    assert "| 1.1.1 Ensure that the API server pod specification file permissions" in text
    assert "/etc/kubernetes/manifests" in text and "| 5.7.4 " in text

    suites = ET.fromstring(junit_xml(report))
    failures = [c.get("name") for c in suites.iter("testcase") if c.find("failure") is not None]
    assert failures[0].startswith("1.2.15 ") and len(failures) == 6
    assert sum(int(s.get("tests")) for s in suites.iter("testsuite")) == 132


def test_history_keeps_every_report_for_the_trend(make_spec) -> None:
    spec = make_spec()
    history = ComplianceHistory()
    history.record(evaluate_spec(spec))
    history.record(merge(evaluate_spec(spec), triaged("talos-false-positives.json", spec)))
    entries = history.entries("lab")
    assert [e.source for e in entries] == ["static", "static+kube-bench"]
    assert entries[0].failed == entries[1].failed == 1
    assert history.latest("lab").source == "static+kube-bench"
    assert oct(history.path.stat().st_mode & 0o777) == "0o600"


def test_the_lab_emulates_kube_bench_from_its_running_nodes(make_spec, lab) -> None:
    spec = make_spec(control_planes=1, workers=1)
    datacenter = lab(spec)
    for node in spec.declared_nodes():
        datacenter.create(node, "image")
    outputs = LabKube(spec, datacenter).kube_bench(ManualClock(), 60)
    assert json.loads(outputs[0])["Controls"] == []  # nothing runs yet: no evidence

    report = triage(parse_kube_bench(_running(spec, datacenter), "lab"), spec.spec.compliance,
                    spec.name, "v1.13.9", "1.36.3", static=evaluate_spec(spec))
    got = statuses(report)
    assert got["1.1.1"] == FALSE_POSITIVE and got["1.2.6"] == FALSE_POSITIVE
    assert [c for c, s in got.items() if s == FAIL] == ["1.2.30"]
    assert NEEDS_RUNTIME not in got.values()


def _running(spec, datacenter) -> str:
    from types import SimpleNamespace

    from drover.compliance.runtime import emulate_kube_bench

    nodes = [SimpleNamespace(**{**n.__dict__, "state": "running"}) for n in datacenter.nodes()]
    return emulate_kube_bench(spec, nodes)


def test_the_kube_bench_job_leaves_out_mounts_talos_does_not_have(make_spec) -> None:
    job = job_manifest(make_spec(), "controlplane", "lab-cp-1")
    pod = job["spec"]["template"]["spec"]
    paths = [v["hostPath"]["path"] for v in pod["volumes"]]
    assert not {"/etc/systemd", "/lib/systemd", "/srv/kubernetes"} & set(paths)
    assert "/etc/kubernetes" in paths and set(paths) == set(MOUNTS.values())
    assert pod["nodeName"] == "lab-cp-1" and pod["hostPID"] is True
    assert "--json" in pod["containers"][0]["command"]
    assert "master,etcd,controlplane,node,policies" in pod["containers"][0]["command"]
    assert job["spec"]["backoffLimit"] == 0


def test_cli_check_exits_1_on_an_unwaived_failure_and_writes_exports(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    runner = CliRunner()
    result = runner.invoke(compliance_app, ["check", str(repo / "configs" / "lab.yaml"),
                                            "--junit", str(tmp_path / "r.xml"),
                                            "--json", str(tmp_path / "r.json")])
    lab_fixed = "service-account-extend-token-expiration" in (
        repo / "configs" / "lab.yaml").read_text()
    assert result.exit_code == (0 if lab_fixed else 1), result.output
    assert "1.2 API Server" in result.output
    assert json.loads((tmp_path / "r.json").read_text())["benchmark"] == "cis-1.12"
    assert ET.parse(tmp_path / "r.xml").getroot().tag == "testsuites"


def test_cli_import_then_history_and_report(make_spec, tmp_path: Path) -> None:
    spec = make_spec()
    config = tmp_path / "lab.yaml"
    config.write_text(yaml.safe_dump(spec.model_dump(by_alias=True, exclude_none=True)))
    runner = CliRunner()
    imported = runner.invoke(compliance_app, ["import", "lab", str(FIXTURES / (
        "talos-false-positives.json")), "--config", str(config)])
    assert imported.exit_code == 0, imported.output
    assert "FALSE-POSITIVE" in imported.output
    shown = runner.invoke(compliance_app, ["history", "lab"])
    assert shown.exit_code == 0 and "compliance lab" in shown.output
    assert [e.source for e in ComplianceHistory().entries("lab")] == ["static+kube-bench"]
    broken = runner.invoke(compliance_app, ["import", "lab", str(FIXTURES / "truncated.json"),
                                            "--config", str(config)])
    assert broken.exit_code == 1 and "truncated.json: not kube-bench JSON" in broken.output
    exported = runner.invoke(compliance_app, ["report", "lab", "--markdown",
                                              str(tmp_path / "r.md")])
    assert exported.exit_code == 0 and "| 1.2.30 " in (tmp_path / "r.md").read_text()
