"""Patches checked against the official Talos config schema of the target version.

A patch is an RFC 7386 merge patch on the v1alpha1 document, so it is validated against that
document's schema with `required` dropped (a patch names only what it changes) and its nulls
(deletions) left out: an unknown field at any depth or a value of the wrong type is reported
as `<config path>: <problem> (Talos vX schema)`, never quoting the value. The schemas ship as
drover/machineconfig/schemas/*.json.gz: v1.13 serves Talos v1.13 and older, v1.15 serves
v1.14–v1.15. The v1.15 schema omits the v1alpha1 fields v1.14 deprecated (Talos still accepts
them, and drover renders them), so for v1.14+ those fields are taken from the v1.13 schema.
Fields drover owns (the node's role, the cluster's identity and keys, and what the spec sets)
are refused in every patch: DROVER_OWNED says what to do instead.
"""

from __future__ import annotations

import copy
import difflib
import gzip
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # jsonschema (0.2 s to import) is loaded when a patch is first checked
    from jsonschema import Draft202012Validator, ValidationError

_IDENTITY = ("drover owns the cluster's identity and keys (its secrets bundle): remove it from "
             "the patch; back the keys up or restore them with drover's secrets commands")
#: config path -> why a patch may not set (or delete) it, and what to do instead
DROVER_OWNED: dict[tuple[str, ...], str] = {
    ("machine", "type"): ("drover owns the node's role: it comes from the pool; put the patch "
                          "under patches.controlPlane or patches.worker instead"),
    **{path: _IDENTITY for path in (
        ("machine", "token"), ("machine", "ca"), ("machine", "acceptedCAs"),
        ("cluster", "id"), ("cluster", "secret"), ("cluster", "token"), ("cluster", "ca"),
        ("cluster", "acceptedCAs"), ("cluster", "aggregatorCA"), ("cluster", "serviceAccount"),
        ("cluster", "secretboxEncryptionSecret"), ("cluster", "aescbcEncryptionSecret"),
        ("cluster", "etcd", "ca"))},
    ("cluster", "clusterName"): "drover owns it: set metadata.name instead",
    ("cluster", "controlPlane", "endpoint"): "drover owns it: set spec.kubernetes.endpoint",
    ("cluster", "network", "podSubnets"): "drover owns it: set spec.kubernetes.podSubnets",
    ("cluster", "network", "serviceSubnets"): (
        "drover owns it: set spec.kubernetes.serviceSubnets"),
    ("cluster", "network", "dnsDomain"): "drover owns it: set spec.kubernetes.dnsDomain",
    ("machine", "install", "disk"): "drover owns it: set spec.talos.installDisk",
    ("machine", "install", "image"): ("drover owns it: it follows spec.talos.version and "
                                      "spec.talos.schematic (upgrades set it)"),
}
_ROOT = "v1alpha1.Config"
_TYPES = {"string": "text", "integer": "a whole number", "number": "a number",
          "boolean": "true or false", "object": "a mapping", "array": "a list", "null": "null"}


def schema_version(talos_version: str) -> str:
    """The packaged schema for a Talos version: 'v1.13' up to v1.13.x, 'v1.15' above."""
    match = re.match(r"^v?(\d+)\.(\d+)", talos_version)
    if not match:
        raise ValueError(f"{talos_version!r} is not a Talos version like v1.13.9")
    return "v1.13" if (int(match[1]), int(match[2])) <= (1, 13) else "v1.15"


@cache
def load_schema(version: str) -> dict[str, Any]:
    """The official config schema packaged for `version` ('v1.13' or 'v1.15'), read once."""
    data = resources.files("drover.machineconfig").joinpath("schemas", f"{version}.json.gz")
    loaded: dict[str, Any] = json.loads(gzip.decompress(data.read_bytes()))
    return loaded


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


@cache
def _validator(version: str) -> Draft202012Validator:
    defs = copy.deepcopy(load_schema(version)["$defs"])
    if version != "v1.13":  # the deprecated v1alpha1 fields Talos still accepts
        for name, old in load_schema("v1.13")["$defs"].items():
            if name not in defs:
                defs[name] = copy.deepcopy(old)
            elif name.startswith("v1alpha1.") and "properties" in old:
                props = defs[name].setdefault("properties", {})
                for field, rule in old["properties"].items():
                    props.setdefault(field, copy.deepcopy(rule))
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$defs": _without_required(defs), "$ref": f"#/$defs/{_ROOT}"}
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema)


def _dotted(path: Any) -> str:
    text = ".".join(f"[{p}]" if isinstance(p, int) else _cut(str(p)) for p in path)
    return text.replace(".[", "[") or "(top level)"


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _without_nulls(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    for kind, python in (("text", str), ("a number", (int, float)), ("a mapping", Mapping),
                         ("a list", list)):
        if isinstance(value, python):
            return kind
    return "null" if value is None else type(value).__name__


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wrong_type(wanted: list[str], instance: Any) -> str:
    return f"must be {' or '.join(_TYPES.get(t, t) for t in wanted)}, got {_kind(instance)}"


def _unknown(error: ValidationError) -> Iterator[tuple[list[Any], str]]:
    known = list(error.schema.get("properties", {}))
    patterns = list(error.schema.get("patternProperties", {}))
    for field in error.instance:
        if field in known or any(re.search(p, str(field)) for p in patterns):
            continue
        close = difflib.get_close_matches(str(field), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        yield [*error.absolute_path, field], f"unknown field{hint}"


def _explain(error: ValidationError) -> Iterator[tuple[list[Any], str]]:
    """(path, problem) for one jsonschema error, without quoting the instance."""
    rule, expected = error.validator, error.validator_value
    if rule == "additionalProperties" and expected is False:
        yield from _unknown(error)
    elif rule in ("oneOf", "anyOf") and error.context:
        if all(e.validator == "type" and not e.relative_path for e in error.context):
            wanted = [t for e in error.context for t in _listed(e.validator_value)]
            yield list(error.absolute_path), _wrong_type(wanted, error.instance)
        else:
            from jsonschema.exceptions import best_match

            yield from _explain(best_match(error.context))
    elif rule == "type":
        yield list(error.absolute_path), _wrong_type(_listed(expected), error.instance)
    elif rule == "enum":
        yield list(error.absolute_path), f"must be one of {', '.join(map(str, expected))}"
    elif rule == "const":
        yield list(error.absolute_path), f"must be {expected!r}"
    elif rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        yield list(error.absolute_path), f"out of range ({rule} {expected})"
    elif rule == "pattern":
        yield list(error.absolute_path), f"does not match the pattern {_cut(str(expected))}"
    else:
        yield list(error.absolute_path), f"fails the schema's {rule!r} rule"


def owned_problems(patch: Mapping[str, Any]) -> list[str]:
    """`<config path>: <why drover owns it>` for each drover-owned field the patch sets or
    deletes."""
    problems = []
    for path, why in DROVER_OWNED.items():
        node: Any = patch
        for part in path:
            node = node.get(part, ...) if isinstance(node, Mapping) else ...
        if node is not ...:
            problems.append(f"{'.'.join(path)}: a patch may not set it; {why}")
    return problems


def patch_problems(patch: Mapping[str, Any], talos_version: str) -> list[str]:
    """Every problem of one merge patch for `talos_version`: drover-owned fields, unknown
    fields and wrong types, each `<config path>: <problem>`; [] when it is valid."""
    version = schema_version(talos_version)
    found = {}
    for error in _validator(version).iter_errors(_without_nulls(patch)):
        for path, problem in _explain(error):
            found.setdefault(_dotted(path), f"{problem} (Talos {version} schema)")
    return owned_problems(patch) + [f"{path}: {problem}" for path, problem in sorted(found.items())]
