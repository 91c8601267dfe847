"""The `drover` command without Prefect: config errors, schema, render, status, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from drover import deploy
from drover.cli import app
from drover.lab.clock import ManualClock
from drover.lab.datacenter import Datacenter
from drover.spec import load_spec
from drover.timing import History, RunTiming, StageTiming

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DROVER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def known(home: Path, *clusters: str) -> None:
    """Folders of clusters drover knows (deployed once), as private as drover makes them."""
    for cluster in clusters:
        (home / "clusters" / cluster).mkdir(mode=0o700, parents=True)
        (home / "clusters" / cluster / "cluster.json").touch(mode=0o600)
    for folder in (home, home / "clusters"):
        folder.chmod(0o700)


def test_a_config_with_several_mistakes_exits_non_zero_listing_each_with_its_path(
        tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "apiVersion": "drover/v1alpha1", "kind": "Cluster", "metadata": {"name": "Bad_Name"},
        "spec": {"talos": {"version": "1.13", "sechematic": {}},
                 "kubernetes": {"version": "1.36.3", "endpoint": "http://10.5.0.2"},
                 "controlPlane": {"count": 2}, "provider": {"kind": "lab", "profile": "fast"}}}))

    result = runner.invoke(app, ["deploy", str(bad)])

    assert result.exit_code == 2
    lines = [line.strip() for line in result.output.splitlines()]
    expected = [
        f"{bad}: metadata.name: must be lowercase letters, digits and '-'",
        f"{bad}: spec.talos.version: must be a Talos version like v1.13.9",
        f"{bad}: spec.talos.sechematic: unknown field; did you mean 'schematic'?",
        f"{bad}: spec.kubernetes.endpoint: must be an https URL",
        f"{bad}: spec.controlPlane.count: must be odd (1, 3, 5) to keep etcd quorum, got 2",
        f"{bad}: spec.provider.profile: Input should be 'instant', 'demo' or 'realistic'",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in lines), (start, result.output)
    assert not (tmp_path / "home" / "lab.db").exists()  # nothing was created


def test_schema_prints_a_json_schema_of_the_cluster_yaml() -> None:
    result = runner.invoke(app, ["schema"])
    schema = json.loads(result.output)
    assert result.exit_code == 0
    assert schema["title"] == "drover Cluster"
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec"}


def test_config_render_writes_one_private_file_per_node_and_a_talosconfig(tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    result = runner.invoke(app, ["config", "render", str(REPO / "configs" / "lab.yaml"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["lab-cp-1.yaml", "lab-cp-2.yaml", "lab-cp-3.yaml", "lab-worker-1.yaml",
                     "lab-worker-2.yaml", "talosconfig"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in out.iterdir())
    assert "BEGIN" not in result.output  # paths only, never contents


def test_status_json_of_an_unknown_cluster_exits_2_naming_the_known_ones(home: Path) -> None:
    known(home, "edge-1")

    result = runner.invoke(app, ["status", "nope", "--json"])

    assert result.exit_code == 2
    assert "nope: drover knows no such cluster; known: edge-1" in result.output


def test_status_json_lists_every_node_with_state_readiness_and_version(home: Path) -> None:
    spec = load_spec(REPO / "configs" / "lab.yaml")
    lab = Datacenter(spec, home / "lab.db", ManualClock())
    infra = deploy.Infra.on_lab(spec, lab)
    deploy.converge(infra)  # also remembers the spec, as a deploy does

    result = runner.invoke(app, ["status", "lab", "--json"])

    nodes = json.loads(result.output)
    assert [n["name"] for n in nodes] == [n.name for n in spec.declared_nodes()]
    assert {tuple(sorted(n)) for n in nodes} == {
        ("address", "drift", "name", "ready", "role", "state", "talos_version")}
    assert all(n["ready"] is True and n["state"] == "running" for n in nodes)
    assert all(n["drift"] == [] for n in nodes)  # the cluster runs what drover applied
    assert {n["talos_version"] for n in nodes} == {"v1.13.9"}


def test_destroy_refuses_without_yes(home: Path) -> None:
    known(home, "lab")
    result = runner.invoke(app, ["destroy", "lab"])
    assert result.exit_code == 2
    assert "without --yes" in result.output


def test_report_shows_every_run_and_percentiles_against_target_and_baseline(home: Path) -> None:
    home.mkdir(parents=True, mode=0o700)
    history = History(home / "history.db")
    for minutes in (7, 8, 9):
        run = RunTiming("lab", "deploy", 1_700_000_000.0, 1_700_000_000.0 + minutes * 60,
                        "completed", stages=[StageTiming("provision", 0, 60, 5, "lab-cp-1", 60)])
        history.record(run)

    result = runner.invoke(app, ["report", "lab"], terminal_width=200)

    assert result.exit_code == 0, result.output
    assert result.output.count("within the 10m target") == 3
    assert "p50 8m" in result.output and "baseline 45m" in result.output


@pytest.mark.parametrize("command", [
    ["destroy", "../../../x", "--yes"], ["status", "../x"], ["upgrade", "a/b"],
    ["replace", "..", "n"], ["health", "/etc"], ["report", "x/../../y"], ["recover", "A_B"],
    ["secrets", "backup", "../x", "--out", "/tmp/b"]])
def test_a_path_like_cluster_name_exits_2_before_anything_runs(
        command: list[str], tmp_path: Path, home: Path) -> None:
    decoy = tmp_path / "x"
    decoy.mkdir()

    result = runner.invoke(app, command)

    assert result.exit_code == 2, result.output
    assert "cluster name" in result.output and "Traceback" not in result.output
    assert decoy.is_dir() and not (home / "clusters").exists()


def test_errors_print_plain_text_not_markup(tmp_path: Path) -> None:
    result = runner.invoke(app, ["destroy", "../x", "--yes"])
    assert "[red]" not in result.output and result.output.startswith("error: ")


def test_status_and_every_refusal_of_an_unknown_cluster_never_import_prefect(
        home: Path) -> None:
    spec = load_spec(REPO / "configs" / "lab.yaml")
    deploy.converge(deploy.Infra.on_lab(spec, Datacenter(spec, home / "lab.db", ManualClock())))
    script = ("import sys\nfrom drover.cli import app\n"
              "for argv in (['status', 'lab'], ['upgrade', 'nosuch'], ['health', 'nosuch']):\n"
              "    try:\n        app(argv)\n    except SystemExit:\n        pass\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n")

    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)

    assert "lab-worker-2" in run.stdout and run.stdout.endswith("[]\n"), run.stdout
