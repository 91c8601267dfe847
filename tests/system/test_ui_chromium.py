"""The real Prefect UI, rendered by headless Chromium: a lab deploy run through a real server
(`drover deploy`, the CLI), then its summary artifact's page, whose rendered DOM must hold
the verdict (short verdict first), a row per node, and the chart image; its stage table
holds no cell rendered as a bullet (a lone "-" would be)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.conftest import lab_config
from tests.system.conftest import REPO, Server

pytestmark = pytest.mark.system

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def ui_server(prefect_server: Server) -> Server:
    """The session's Prefect server (its UI is on), once Chromium is known to be here."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing (make system-deps installs it)")
        pytest.skip("chromium is not installed here (make system-deps installs it)")
    return prefect_server


def rendered(url: str, profile: Path) -> str:
    """The DOM of `url` once the UI's single-page app has rendered it (virtual time lets its
    requests and timers run; without it the page is still empty)."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
         "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def text_of(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_a_deploy_runs_artifact_page_shows_the_verdict_and_a_row_per_node(
        ui_server: Server, tmp_path: Path) -> None:
    config = lab_config(tmp_path, name="ui", control_planes=1, workers=2, profile="demo")
    env = {**ui_server.env, "DROVER_HOME": str(tmp_path / "home"),
           "DROVER_CONFIG_ROOT": str(tmp_path)}
    deployed = subprocess.run([sys.executable, "-m", "drover.cli", "deploy", config], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300, check=False)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with ui_server.api() as api:
        artifacts = {a["key"]: a for a in api.post("/artifacts/filter", json={
            "artifacts": {"key": {"like_": "deploy-ui"}}}).json() if a["key"]}
    summary = artifacts["deploy-ui-summary"]
    assert summary["description"].startswith(summary["data"].split("**")[1])  # short first

    base = ui_server.url.removesuffix("/api")
    pages = {key: f"{base}/artifacts/artifact/{artifacts[key]['id']}"
             for key in ("deploy-ui-summary", "deploy-ui", "deploy-ui-chart")}
    # one after another on one profile: the UI's bundle comes from its cache after the first
    doms = {key: rendered(url, tmp_path / "chrome") for key, url in pages.items()}
    dom = doms["deploy-ui-summary"]
    text = text_of(dom)

    short = re.search(r"\d[\dhms.]* — within the 10m target", text)
    assert short, text[:3000]
    assert re.search(r"faster than the 45m (Kubespray cluster\.yml )?baseline", text)
    for node in ("ui-cp-1", "ui-worker-1", "ui-worker-2"):
        assert re.search(rf"<td[^>]*>(?:(?!</tr>).)*{node}(?:(?!</tr>).)*provision", dom), node

    table = doms["deploy-ui"]
    assert "provision" in text_of(table)
    assert "<li" not in table.split("<table", 1)[-1]  # no cell turned into a list
    assert re.search(r'<img[^>]+src="data:image/png;base64,iVBORw0KGgo', doms["deploy-ui-chart"])
