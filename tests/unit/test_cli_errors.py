"""What a `drover` user sees when something is wrong: one line, never a traceback (unless
--debug), exit 2 for usage, config and unknown names, 1 for a failed operation; unknown
clusters and nodes named with what exists, before Prefect starts."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drover import cli, cli_common, deploy
from drover.cli import app
from drover.errors import StateError
from drover.lab.clock import ManualClock
from drover.lab.datacenter import Datacenter
from drover.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DROVER_HOME knowing clusters lab and edge-1; Prefect may not start in these tests;
    the global options are reset after each."""
    home = tmp_path / "home"
    monkeypatch.setenv("DROVER_HOME", str(home))
    for cluster in ("lab", "edge-1"):
        (home / "clusters" / cluster).mkdir(mode=0o700, parents=True)
        (home / "clusters" / cluster / "cluster.json").touch(mode=0o600)
    for folder in (home, home / "clusters"):
        folder.chmod(0o700)

    def no_prefect() -> None:
        raise AssertionError("Prefect was started")

    monkeypatch.setattr(cli_common, "prefect_env", no_prefect)
    monkeypatch.setattr(cli_common, "options", cli_common.Options())
    return home


@pytest.mark.parametrize("command", [
    ["status", "nosuch"], ["status", "nosuch", "--json"], ["destroy", "nosuch", "--yes"],
    ["destroy", "nosuch", "--dry-run"], ["upgrade", "nosuch"],
    ["upgrade", "nosuch", "--dry-run"], ["replace", "nosuch", "nosuch-worker-1"],
    ["health", "nosuch"], ["recover", "nosuch"],
    ["secrets", "backup", "nosuch", "--out", "b.enc"], ["compliance", "history", "nosuch"],
    ["compliance", "report", "nosuch"], ["compliance", "import", "nosuch", "r.json"],
    ["report", "nosuch"]])
def test_an_unknown_cluster_exits_2_in_one_line_before_prefect_starts(
        command: list[str]) -> None:
    result = runner.invoke(app, command)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: nosuch: ")
    assert len(result.output.strip().splitlines()) == 1
    if command[0] != "report":  # the report names the clusters with a timing history
        assert "known: edge-1, lab" in result.output


def test_an_unknown_node_of_a_known_cluster_exits_2_naming_its_nodes(home: Path) -> None:
    shutil.rmtree(home / "clusters" / "lab")  # deployed for real below
    spec = load_spec(REPO / "configs" / "lab.yaml")
    deploy.converge(deploy.Infra.on_lab(spec, Datacenter(spec, home / "lab.db", ManualClock())))

    result = runner.invoke(app, ["replace", "lab", "lab-worker-9"])

    assert result.exit_code == 2, result.output
    assert result.output == ("error: lab: no node 'lab-worker-9' (never there, or replaced "
                             "already); its nodes: lab-cp-1, lab-cp-2, lab-cp-3, lab-worker-1, "
                             "lab-worker-2\n")


def test_debug_shows_the_traceback_of_a_drover_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise StateError("lab.db: damaged; restore it")

    monkeypatch.setattr(cli, "_status", broken)

    quiet = runner.invoke(app, ["status", "lab"])
    result = runner.invoke(app, ["--debug", "status", "lab"])

    assert quiet.exit_code == result.exit_code == 1
    assert "Traceback" not in quiet.output
    assert "Traceback (most recent call last)" in result.output
    assert 'in broken\n    raise StateError("lab.db: damaged; restore it")' in result.output
    assert result.output.endswith("error: lab.db: damaged; restore it\n")


@pytest.mark.parametrize("error, code", [
    (StateError("lab.db: damaged; restore it"), 1),  # a failed operation
    (ValueError("--max-unavailable must be at least 1"), 2),  # a usage error
])
def test_a_drover_error_no_command_caught_is_one_line_with_its_exit_code(
        monkeypatch: pytest.MonkeyPatch, error: Exception, code: int) -> None:
    def broken(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(cli, "_status", broken)

    result = runner.invoke(app, ["status", "lab"])

    assert result.exit_code == code
    assert result.output == f"error: {error}\n"


def fake_flow(monkeypatch: pytest.MonkeyPatch, result: dict[str, Any]) -> list[dict[str, Any]]:
    """run_flow replaced by one returning `result`; the calls it got."""
    calls: list[dict[str, Any]] = []

    def run_flow(module: str, name: str, view: Any = None, **parameters: Any) -> Any:
        calls.append({"flow": name, "view": view, **parameters})
        return result

    monkeypatch.setattr(cli, "run_flow", run_flow)
    monkeypatch.setattr(cli, "known_spec", lambda cluster: load_spec(
        REPO / "configs" / "lab.yaml"))
    return calls


def test_a_dry_run_says_so_first_and_prints_the_plan_as_a_plan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plan = ["lab: will upgrade lab-cp-1 to Talos v1.14.0",
            "lab: will upgrade lab-worker-1, lab-worker-2 to Talos v1.14.0"]
    calls = fake_flow(monkeypatch, {"cluster": "lab", "changed": False, "plan": plan})

    result = runner.invoke(app, ["upgrade", "lab", "--talos-version", "v1.14.0", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["dry run: nothing was changed", *plan]
    assert calls[0]["dry_run"] is True and calls[0]["view"] is None  # no live view


def test_a_summary_line_is_never_wrapped_mid_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = "4m 10s — within the 10m target; 10.8x faster than the 45m baseline"
    fake_flow(monkeypatch, {"cluster": "lab", "changed": True, "verdict": verdict,
                            "upgraded": ["lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-worker-1"]})

    result = runner.invoke(app, ["upgrade", "lab"], terminal_width=40)

    assert result.output == ("lab: upgraded lab-cp-1, lab-cp-2, lab-cp-3, lab-worker-1; "
                             f"{verdict}\n")


def test_a_deploy_upgrade_or_replace_runs_inside_the_live_view_unless_verbose(
        monkeypatch: pytest.MonkeyPatch) -> None:
    view = object()
    monkeypatch.setattr(cli, "live_view", lambda: view)
    calls = fake_flow(monkeypatch, {"cluster": "lab", "changed": True, "verdict": "ok",
                                    "upgraded": [], "by": "lab-worker-3"})
    monkeypatch.setattr(cli, "known_node", lambda spec, node: node)

    runner.invoke(app, ["upgrade", "lab"])
    runner.invoke(app, ["replace", "lab", "lab-worker-1"])

    assert [c["view"] for c in calls] == [view, view]


def test_verbose_shows_the_log_lines_instead_of_the_live_view() -> None:
    cli_common.options.verbose = True
    assert isinstance(cli_common.live_view(), nullcontext)


@pytest.mark.parametrize("verbose, preset, level", [
    (False, None, "CRITICAL"),  # Prefect's console lines hidden; the API still gets them
    (True, None, "NOTSET"),  # -v: every line, as Prefect prints them
    (False, "WARNING", "WARNING"),  # the operator's own setting stands
    (True, "CRITICAL", "NOTSET"),
])
def test_prefect_console_lines_are_hidden_unless_verbose(
        monkeypatch: pytest.MonkeyPatch, verbose: bool, preset: str | None, level: str) -> None:
    monkeypatch.undo()  # the real prefect_env
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")  # no server lookup
    if preset is None:
        monkeypatch.delenv(cli_common.CONSOLE_LEVEL, raising=False)
    else:
        monkeypatch.setenv(cli_common.CONSOLE_LEVEL, preset)
    monkeypatch.setattr(cli_common, "options", cli_common.Options(verbose=verbose))

    cli_common.prefect_env()

    assert os.environ[cli_common.CONSOLE_LEVEL] == level


def test_verbose_and_debug_are_global_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[cli_common.Options] = []

    def run_flow(*args: Any, **parameters: Any) -> dict[str, Any]:
        seen.append(cli_common.Options(**vars(cli_common.options)))
        return {"unhealthy": [], "replace": [], "waiting": {}, "alert": None}

    fake_flow(monkeypatch, {})
    monkeypatch.setattr(cli, "run_flow", run_flow)

    result = runner.invoke(app, ["-v", "--debug", "health", "lab"])

    assert result.exit_code == 0, result.output
    assert seen == [cli_common.Options(verbose=True, debug=True)]


def test_prefect_console_handlers_set_up_earlier_get_the_chosen_level(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class PrefectConsoleHandler(logging.StreamHandler):  # named as Prefect's, not imported
        pass

    handler, other = PrefectConsoleHandler(), logging.StreamHandler()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler, other])
    monkeypatch.setenv(cli_common.CONSOLE_LEVEL, "CRITICAL")

    cli_common.quiet_console()

    assert (handler.level, other.level) == (logging.CRITICAL, logging.NOTSET)


@pytest.mark.parametrize("verbose", [False, True])
def test_prefect_configured_by_prefect_env_prints_its_lines_only_when_verbose(
        verbose: bool) -> None:
    script = ("from drover import cli_common\n"
              f"cli_common.options.verbose = {verbose}\n"
              "cli_common.prefect_env()\n"
              "import prefect.main  # what `from prefect import flow` runs: logging set up\n"
              "from prefect.logging import get_logger\n"
              "get_logger('prefect.drover_test').warning('a Prefect line')\n")
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # never contacted
    env.pop(cli_common.CONSOLE_LEVEL, None)

    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60, check=True)

    assert ("| WARNING | prefect.drover_test - a Prefect line" in run.stderr) is verbose, \
        run.stderr


@pytest.mark.parametrize("verbose, shown", [(False, ["lab: will create lab-cp-1 (controlplane)"]),
                                            (True, [])])
def test_the_plan_a_flow_logs_before_acting_is_printed_and_nothing_else(
        capsys: pytest.CaptureFixture[str], verbose: bool, shown: list[str]) -> None:
    cli_common.options.verbose = verbose
    logger = logging.getLogger("prefect.flow_runs")
    level, handlers, propagate = logger.level, logger.handlers[:], logger.propagate
    logger.setLevel(logging.INFO)  # as Prefect sets it up
    # without its API handler, which a test that set Prefect's logging up may have left
    logger.handlers, logger.propagate = [], False
    try:
        with cli_common.plan_lines():
            for line in ("lab: will create lab-cp-1 (controlplane)", "Beginning flow run 'x'",
                         "dry run: lab: will create lab-cp-1 (controlplane)",
                         "lab-cp-1: created; will boot"):
                logger.info(line)
        logger.info("lab: will create lab-cp-2 (controlplane)")  # after the run: not shown
    finally:
        logger.setLevel(level)
        logger.handlers, logger.propagate = handlers, propagate

    assert capsys.readouterr().out.splitlines() == shown


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_one_line_naming_it_and_debug_shows_where(
        monkeypatch: pytest.MonkeyPatch, debug: bool) -> None:
    def broken(*args: Any) -> Any:
        raise ConnectionResetError("the Prefect API went away")

    monkeypatch.setattr(cli, "_status", broken)

    result = runner.invoke(app, [*(["--debug"] if debug else []), "status", "lab"])

    assert result.exit_code == 1
    assert ("Traceback (most recent call last)" in result.output) is debug
    assert result.output.splitlines()[-1].startswith(
        "error: unexpected ConnectionResetError: the Prefect API went away")
