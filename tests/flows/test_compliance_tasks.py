"""The compliance tasks under Prefect: the pre-flight refuses a weakened config before anything
exists; a passing one is published as `compliance-<cluster>` artifacts and kept in history."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect import flow
from prefect.artifacts import Artifact

from drover.compliance.history import ComplianceHistory
from drover.errors import DroverError
from drover.providers.lab import open_datacenter
from drover.spec import load_spec
from tasks.compliance import check_compliance, publish_compliance, runtime_compliance
from tests.flows.conftest import lab_config

FIX = {"service-account-extend-token-expiration": "false"}


def config_with(tmp_path: Path, name: str, **extra_args: str) -> str:
    path = Path(lab_config(tmp_path, name=name))
    data = yaml.safe_load(path.read_text())
    data["spec"]["patches"]["controlPlane"].append(
        {"cluster": {"apiServer": {"extraArgs": {**FIX, **extra_args}}}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@flow
def compliance_run(config: str) -> str:
    spec = load_spec(config)
    report = check_compliance(spec)
    return publish_compliance(spec, runtime_compliance(spec, report))


def test_a_weakened_config_is_refused_before_anything_exists(tmp_path: Path) -> None:
    config = config_with(tmp_path, "weak", profiling="true")
    with pytest.raises(DroverError, match=r"1\.2\.15.*cluster\.apiServer\.extraArgs\.profiling"):
        compliance_run(config)
    assert open_datacenter(load_spec(config)).nodes() == []


def test_a_passing_config_is_published_and_recorded(tmp_path: Path) -> None:
    verdict = compliance_run(config_with(tmp_path, "good"))
    assert verdict.startswith("good: cis-1.12 (static+lab) passes")
    table = Artifact.get("compliance-good")
    report = Artifact.get("compliance-good-report")
    assert table is not None and report is not None
    assert "| 1.1.1 Ensure that the API server pod specification" in str(report.data)
    assert [e.source for e in ComplianceHistory().entries("good")] == ["static+lab"]
