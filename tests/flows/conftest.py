"""Flow tests: real flows on the lab, under one session-scoped Prefect test harness."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="session")
def prefect_harness() -> Iterator[None]:
    # One harness for the whole session: starting one costs ~8 s.
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def drover_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "drover-home"
    monkeypatch.setenv("DROVER_HOME", str(home))
    monkeypatch.setenv("DROVER_CONFIG_ROOT", str(tmp_path))  # flows read configs only there
    return home


def lab_config(tmp_path: Path, name: str = "t", control_planes: int = 3, workers: int = 2,
               faults: list[dict[str, Any]] | None = None, **provider: Any) -> str:
    """Write a cluster YAML for the lab (instant profile, virtual clock) and return its path."""
    data = yaml.safe_load((REPO / "configs" / "lab.yaml").read_text())
    data["metadata"]["name"] = name
    body = data["spec"]
    body["controlPlane"]["count"] = control_planes
    body["workers"][0]["count"] = workers
    patches = tmp_path / "patches"
    patches.mkdir(exist_ok=True)
    shutil.copy(REPO / "configs" / "patches" / "time.yaml", patches / "time.yaml")
    body["patches"]["all"] = ["patches/time.yaml"]  # confined to the config's folder
    body["provider"] = {"kind": "lab", "profile": "instant", "clock": "virtual", "seed": 7,
                        "faults": faults or [], **provider}
    body["deployment"] = {"retryDelaySeconds": 0,
                          "timeouts": {"provisionSeconds": 120, "healthSeconds": 300}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)
