"""The one YAML loader for every file drover reads (cluster configs, patch files, fleet files).

It is pyyaml's SafeLoader with three guards: a duplicate key in a mapping is an error (naming
the key and its line) instead of the last one silently winning; input is capped at MAX_BYTES;
and the document is measured as it would be with every alias expanded, so a billion-laughs
bomb (a few lines that expand to 10^9 nodes when anything walks the result) fails at once
rather than when a merge or a schema check walks it. Errors are SpecError with the file, line,
column and pyyaml's *problem* text; pyyaml's own message quotes the offending line, which
may hold a secret, so it is never used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from drover.errors import SpecError

#: for drover's own files only (its catalogue, its rendered configs): libyaml's fast safe
#: loader when PyYAML has it; every file an operator writes goes through load_yaml
TRUSTED = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_BYTES = 1 << 20
#: nodes in the document with every alias expanded; a large cluster config has a few thousand
MAX_NODES = 100_000
MAX_DEPTH = 100
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys; the measuring happens between compose and construct."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue  # `<<: *base` keys are overridden on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeConstructor reports it
            if first is None:
                seen[key] = key_node.start_mark.line + 1
            else:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_cut(key)} (first at line {first}): "
                    "remove one of them", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _cut(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _describe(exc: yaml.YAMLError) -> str:
    """`line L, column C: problem` from pyyaml's parts, never its quoted snippet."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot be parsed"
        context = f" ({exc.context} at {_where(exc.context_mark)})" if (
            exc.context and exc.problem and exc.context_mark is not None) else ""
        where = f" at {_where(mark)}" if mark is not None else ""
        return f"not valid YAML{where}: {problem}{context}"
    if isinstance(exc, yaml.reader.ReaderError):
        return (f"not valid YAML: a character YAML does not allow (code #x{exc.character:04x}) "
                f"at position {exc.position}")
    return f"not valid YAML: {type(exc).__name__}"


def _measure(root: Node) -> None:
    """Count the nodes of the document with aliases expanded; refuse past MAX_NODES or
    MAX_DEPTH, and refuse a recursive alias. Memoised per node, so a bomb is measured in
    time linear in its text, not in its expansion."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            raise _Refused(node, f"nested more than {MAX_DEPTH} levels deep")
        if key in active:
            raise _Refused(node, "an alias refers to the node that contains it (recursive)")
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        active.discard(key)
        if total > MAX_NODES:
            raise _Refused(node, f"expands to more than {MAX_NODES} values (aliases "
                                 "included): too large for a config")
        sizes[key] = total
        return total

    size(root, 0)


class _Refused(Exception):
    def __init__(self, node: Node, problem: str) -> None:
        self.node, self.problem = node, problem


def load_text(text: str, source: str) -> Any:
    """Parse one YAML document from `text`; SpecError(source, [...]) when it is not allowed."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise SpecError(source, [f"larger than {MAX_BYTES // 1024} KiB: too large for a config"])
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node)
        return loader.construct_document(node)
    except _Refused as exc:
        raise SpecError(source, [f"not allowed at {_where(exc.node.start_mark)}: "
                                 f"{exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [_describe(exc)]) from None
    except RecursionError:
        raise SpecError(source, ["not allowed: nested too deeply"]) from None
    finally:
        loader.dispose()


def load_file(path: str | os.PathLike[str], source: str | None = None) -> Any:
    """Read and parse a YAML file (at most MAX_BYTES, UTF-8); errors name `source` (default:
    the path) and never quote the file."""
    path = Path(path)
    source = source or str(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError(source, [f"cannot read the file: {exc.strerror or type(exc).__name__}"]
                        ) from None
    if len(raw) > MAX_BYTES:
        raise SpecError(source, [f"larger than {MAX_BYTES // 1024} KiB: too large for a config"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, [f"not UTF-8 text (byte {exc.start})"]) from None
    return load_text(text, source)
