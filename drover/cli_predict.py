"""`drover predict CONFIG`: how long the deploy of CONFIG's cluster will take (and a rolling
upgrade after it with --upgrade, and a fleet of such clusters with --fleet), from the real
flows on a scratch lab under exact virtual time; nothing is created anywhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drover.cli_common import fail, out, prefect_env
from drover.errors import DroverError


def predict(config: Annotated[Path, typer.Argument(help="cluster YAML, e.g. configs/lab.yaml")],
            upgrade: Annotated[str | None, typer.Option(
                "--upgrade", metavar="VERSION",
                help="also predict a rolling upgrade to this Talos version")] = None,
            max_unavailable: Annotated[int | None, typer.Option(
                help="workers upgraded at once (default: the config's)")] = None,
            fleet: Annotated[Path | None, typer.Option(
                help="fleet YAML: its upgrade if each cluster were like CONFIG's")] = None,
            seed: Annotated[int, typer.Option(help="seed of the lab's jitter")] = 1,
            remember: Annotated[bool, typer.Option(
                help="keep it for the cluster's next deploy summary")] = True) -> None:
    """Predict the wall time of deploying CONFIG's cluster, with its critical path and
    drover's own CPU time."""
    from drover import predict as predicting
    from drover.fleet import load_fleet
    from drover.spec import load_spec

    try:
        load_spec(config)  # config errors before Prefect starts
        fleet_spec = load_fleet(fleet) if fleet is not None else None
    except (DroverError, ValueError) as exc:
        raise fail(exc) from None
    prefect_env()
    from flows.deploy import deploy_cluster
    from flows.upgrade import upgrade_cluster

    try:
        result = predicting.predict(config, deploy_cluster, upgrade_cluster, upgrade,
                                    max_unavailable=max_unavailable, fleet=fleet_spec,
                                    seed=seed)
    except (DroverError, ValueError) as exc:
        raise fail(exc) from None
    for line in result.lines():
        out.print(line, highlight=False, markup=False)
    if remember:
        predicting.remember_prediction(result)
