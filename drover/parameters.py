"""Flow parameter types as the UI's form shows them: a cluster config offered as a choice of
the configs shipped under the config root, optional values as plain fields (a string, an
integer, a number: no switch between a type and None), an empty text field meaning unset.
Pydantic only (the flows' signatures use these; the library never imports Prefect)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import WithJsonSchema

from drover.boundaries import config_root


class ShippedConfigs:
    """Annotated metadata of a `config` parameter: its JSON schema offers the cluster configs
    under the config root as a choice (the UI's form shows a list), relative to the working
    directory where they are inside it; read when a schema is made (`prefect deploy`), and
    no choice when there are none. A flow called in-process (the CLI) still takes any path;
    a run created from a deployment that enforces its schema must pick one of the list."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema: dict[str, Any] = handler(core_schema)
        root, here = config_root(), Path.cwd().resolve()
        found = [path for path in sorted(root.glob("*.yaml")) if _declares_cluster(path)]
        if found:
            schema["enum"] = [str(p.relative_to(here)) if p.is_relative_to(here) else str(p)
                              for p in found]
        return schema


def _declares_cluster(path: Path) -> bool:
    try:
        return bool(re.search(r"^kind:\s*Cluster\s*$", path.read_text(errors="replace"), re.M))
    except OSError:  # unreadable: not offered
        return False


#: a cluster config under configs/: a choice in the UI's form, any path a caller gives here
ConfigPath = Annotated[str, ShippedConfigs()]
#: optional parameters the UI shows as a plain field (no null toggle); empty means unset
OptionalText = Annotated[str | None, WithJsonSchema({"type": "string"})]
OptionalInt = Annotated[int | None, WithJsonSchema({"type": "integer"})]
OptionalNumber = Annotated[float | None, WithJsonSchema({"type": "number"})]


def unset_if_empty(value: str | None) -> str | None:
    """A text parameter as given, None when left empty (a cleared field in the UI's form)."""
    return value if value and value.strip() else None
