"""RFC 7386 JSON merge patch, the patch format of the cluster spec's `patches` section.

`merge_patch` is the RFC's MergePatch pseudo-code exactly: a null deletes a key, a mapping merges
recursively, anything else (lists included) replaces the target wholesale. Neither argument is
ever mutated; the result shares no mutable object with either, so a rendered config can be
edited without touching the spec it came from.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """Return `target` with `patch` applied as an RFC 7386 merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    # A mapping patch on a non-mapping target starts from {} (RFC 7386 section 2).
    result = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def apply_patches(doc: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply merge patches in order; each must be a mapping so the result stays a document."""
    result: dict[str, Any] = copy.deepcopy(doc)
    for index, patch in enumerate(patches):
        if not isinstance(patch, Mapping):
            raise ValueError(f"patch {index} must be a mapping, got {type(patch).__name__}")
        result = merge_patch(result, patch)
    return result
