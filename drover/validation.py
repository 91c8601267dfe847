"""Turn pydantic's validation errors into lines an SRE can act on.

Each line is `<yaml.path>: <what is wrong>`, with the YAML's own (camelCase)
names, the tag of a discriminated union left out of the path, a suggestion
for a misspelt field, and a readable hint in place of a raw regex. A
cross-field check raises `Located` to put its problems at the fields they
concern; values quoted back are cut short.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

SHOWN_MAX = 60


class Located(ValueError):
    """Problems found by a model validator, each at a path below the model that raised it:
    `Located(("kubernetes", "serviceSubnets"), "overlaps ...")`, or several via `problems`."""

    def __init__(self, *located: tuple[tuple[str | int, ...], str]) -> None:
        self.problems = list(located)
        super().__init__("; ".join(message for _, message in located))


def shown(value: Any) -> str:
    """repr of a value, cut to SHOWN_MAX characters: an input is named, never dumped."""
    text = repr(value)
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "…"


def _dotted(loc: list[Any] | tuple[Any, ...]) -> str:
    path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc)
    return path.replace(".[", "[") or "(top level)"


def _names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field may hold (itself, list items, union members)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _tags(model: type[BaseModel], discriminator: str) -> tuple[Any, ...]:
    field = model.model_fields.get(discriminator)
    return typing.get_args(field.annotation) if field else ()


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[Any], type[BaseModel] | None]:
    """The YAML path of `loc` (union tags dropped) and the model owning its last mapping."""
    path: list[Any] = []
    model: type[BaseModel] | None = root
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        path.append(part)
        if isinstance(part, int) or model is None:
            continue
        field = {f.alias or n: f for n, f in model.model_fields.items()}.get(part)
        if field is None:
            model = None
            continue
        members = _models_in(field.annotation)
        discriminator = field.discriminator if isinstance(field.discriminator, str) else None
        if discriminator and parts:
            tag = parts[0]
            chosen = [m for m in members if tag in _tags(m, discriminator)]
            if chosen:
                parts.pop(0)  # pydantic puts the tag in the location; the YAML has none
                model = chosen[0]
                continue
        model = members[0] if len(members) == 1 else None
    return path, model


def describe(error: dict[str, Any], root: type[BaseModel], hints: dict[str, str]) -> str:
    loc, owner = _walk(root, tuple(error["loc"]))
    path = _dotted(loc)
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        _, parent = _walk(root, tuple(error["loc"])[:-1])
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(str(loc[-1]), _names(parent), n=1)
            hint = (f"; did you mean {close[0]!r}?" if close
                    else f"; allowed: {', '.join(_names(parent))}")
        return f"{path}: unknown field{hint}"
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind in ("union_tag_invalid", "literal_error"):
        return f"{path}: {msg}"
    got = error.get("input")
    if kind == "string_type" and isinstance(got, (int, float)) and not isinstance(got, bool):
        return f"{path}: must be text, got the number {got!r}; quote it in the YAML"
    if kind in ("int_type", "float_type", "bool_type") and not isinstance(got, (dict, list)):
        wanted = {"int_type": "a whole number", "float_type": "a number",
                  "bool_type": "true or false"}[kind]
        return f"{path}: must be {wanted}, got {shown(got)} (values are not converted)"
    if kind == "string_pattern_mismatch":
        msg = hints.get(error.get("ctx", {}).get("pattern", ""), msg)
    msg = msg.removeprefix("Value error, ")
    if kind != "value_error" and not isinstance(got, (dict, list)):
        msg = f"{msg}, got {shown(got)}"
    return f"{path}: {msg}"


def _describe_all(error: dict[str, Any], root: type[BaseModel], hints: dict[str, str]) -> list[str]:
    cause = error.get("ctx", {}).get("error")
    if not isinstance(cause, Located):
        return [describe(error, root, hints)]
    base, _ = _walk(root, tuple(error["loc"]))
    return [f"{_dotted([*base, *where])}: {message}" for where, message in cause.problems]


def describe_errors(exc: ValidationError, root: type[BaseModel],
                    hints: dict[str, str] | None = None) -> list[str]:
    return [line for e in exc.errors() for line in _describe_all(e, root, hints or {})]
