"""Flow parameter types: the shipped configs offered as a choice, empty text meaning unset."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter

from drover.parameters import ConfigPath, OptionalText, unset_if_empty


@pytest.mark.parametrize(("given", "value"), [
    ("v1.14.0", "v1.14.0"), ("", None), ("  ", None), (None, None)])
def test_an_empty_text_parameter_is_unset(given: str | None, value: str | None) -> None:
    assert unset_if_empty(given) == value


def test_the_config_choice_lists_cluster_configs_only_and_takes_any_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROVER_CONFIG_ROOT", str(tmp_path))
    (tmp_path / "b.yaml").write_text("apiVersion: drover/v1alpha1\nkind: Cluster\n")
    (tmp_path / "a.yaml").write_text("kind: Cluster\n")
    (tmp_path / "fleet.yaml").write_text("kind: Fleet\n")
    (tmp_path / "odd.yaml").mkdir()  # unreadable as a file: not offered
    adapter = TypeAdapter(ConfigPath)

    assert adapter.json_schema()["enum"] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    assert adapter.validate_python("/anywhere/else.yaml") == "/anywhere/else.yaml"


def test_no_choice_is_offered_when_no_config_is_shipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROVER_CONFIG_ROOT", str(tmp_path))
    assert TypeAdapter(ConfigPath).json_schema() == {"type": "string"}


def test_optional_text_is_a_plain_string_in_the_schema_and_accepts_none() -> None:
    adapter = TypeAdapter(OptionalText)
    assert adapter.json_schema() == {"type": "string"}
    assert adapter.validate_python(None) is None
