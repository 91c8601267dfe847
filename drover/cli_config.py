"""`drover config render CONFIG --out DIR` and `drover schema`: the files drover would make
and the shape of the cluster YAML, with no cluster and no Prefect."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from drover.cli_common import fail, out
from drover.errors import SpecError

config_app = typer.Typer(help="Machine configuration.", no_args_is_help=True)


@config_app.command("render")
def config_render(config: Path, out_dir: Annotated[Path, typer.Option("--out")]) -> None:
    """Write each node's Talos machine config and a talosconfig into --out (mode 0600)."""
    from drover.home import cluster_dir
    from drover.machineconfig import ensure_secrets, write_rendered
    from drover.spec import load_spec

    try:
        spec = load_spec(config)
    except SpecError as exc:
        raise fail(exc) from None
    # before the first deploy this makes the secrets the deploy then uses; after it, loads them
    paths = write_rendered(spec, ensure_secrets(cluster_dir(spec.name), False), out_dir)
    for path in paths:
        out.print(str(path), highlight=False, markup=False)


def schema() -> None:
    """Print the JSON Schema of the cluster YAML (for editors)."""
    from drover.spec import json_schema

    json.dump(json_schema(), sys.stdout, indent=2)
    print()
