"""The one YAML loader: duplicate keys, bombs and oversized input refused fast; errors give the
line and pyyaml's problem, never the offending line's text."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from drover.errors import SpecError
from drover.yamlsafe import MAX_NODES, load_file, load_text

SECRET = "s3cr3t-token-value"


def refusal(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        load_text(text, "f.yaml")
    assert caught.value.source == "f.yaml"
    [issue] = caught.value.issues
    return issue


@pytest.mark.parametrize("text, expected", [
    ("a: 1\nb: 2\na: 3\n", "not valid YAML at line 3, column 1: duplicate key 'a' (first at "
                           "line 1): remove one of them"),
    ("{a: 1, a: 2}", "not valid YAML at line 1, column 8: duplicate key 'a'"),
    ("x:\n  - {k: 1, k: 1}\n", "not valid YAML at line 2, column 12: duplicate key 'k'"),
    ("x: &x [*x]\n", "not allowed at line 1, column 4: an alias refers to the node that "
                     "contains it (recursive)"),
    ("[" * 200 + "]" * 200, "not allowed at line 1, column 102: nested more than 100 levels"),
    ("a: !!python/object/apply:os.system [id]\n", "not valid YAML at line 1, column 4: could "
                                                  "not determine a constructor"),
])
def test_what_the_safe_loader_refuses(text: str, expected: str) -> None:
    assert refusal(text).startswith(expected)


def test_merge_keys_still_override_on_purpose() -> None:
    assert load_text("base: &b {a: 1, c: 1}\nx:\n  <<: *b\n  a: 2\n", "f") == {
        "base": {"a": 1, "c": 1}, "x": {"a": 2, "c": 1}}


def test_a_billion_laughs_fails_in_milliseconds() -> None:
    levels = ["l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    started = time.perf_counter()
    issue = refusal("\n".join(levels) + "\n")
    assert time.perf_counter() - started < 0.2
    assert f"expands to more than {MAX_NODES} values" in issue


def test_shared_aliases_below_the_limit_load() -> None:
    data = load_text("a: &a [1, 2]\nb: [*a, *a, *a]\n", "f")
    assert data == {"a": [1, 2], "b": [[1, 2]] * 3}


@pytest.mark.parametrize("text", [
    f"password: {SECRET}: oops\n",
    f"key: '{SECRET}\n",
    f"key: [{SECRET}\n",
    f"key:\n\t{SECRET}\n",
    f"a: 1\n  b: {SECRET}\n",
])
def test_an_error_never_quotes_the_line_it_is_on(text: str) -> None:
    issue = refusal(text)
    assert SECRET not in issue and "line" in issue


def test_files_are_capped_and_must_be_utf8(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (1 << 20) + b"\n")
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_file(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \xff\xfe" + SECRET.encode())
    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 3\)") as caught:
        load_file(binary)
    assert SECRET not in str(caught.value)
    with pytest.raises(SpecError, match=r"missing\.yaml: .*cannot read the file"):
        load_file(tmp_path / "missing.yaml")


def test_an_empty_file_is_none(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text("# nothing\n")
    assert load_file(tmp_path / "e.yaml") is None
