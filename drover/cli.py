"""The `drover` command: the same flows as the Prefect UI, from a terminal.

Flows run against `drover server` when it runs, else Prefect's temporary server. Flows are
imported inside the commands, so `drover schema`, `drover status` and every refusal of an
unknown cluster start instantly and the library stays Prefect-free. Prefect's log lines
show with -v (they always reach the UI); a drover error is one line (a traceback with
--debug), exit 2 for usage, config and unknown names, 1 for a failed operation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from drover.cli_common import (
    DroverGroup,
    Wait,
    busy,
    checked_name,
    err,
    fail,
    known_cluster,
    known_node,
    known_spec,
    live_view,
    out,
    print_table,
    run_flow,
    set_options,
)
from drover.cli_compliance import compliance_app
from drover.cli_config import config_app, schema
from drover.cli_predict import predict
from drover.cli_report import report
from drover.cli_server import server_app
from drover.cli_state import recover, secrets_app
from drover.errors import DroverError, SpecError
from drover.spec import load_spec
from drover.timing import format_duration

app = typer.Typer(cls=DroverGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Deploy, upgrade, heal and replace Talos Kubernetes clusters.")
app.add_typer(config_app, name="config")
app.add_typer(secrets_app, name="secrets")
app.add_typer(compliance_app, name="compliance")
app.add_typer(server_app, name="server")
app.command()(predict)
app.command()(recover)
app.command()(report)
app.command()(schema)
DRY_RUN = "dry run: nothing was changed"


@app.callback()
def main(verbose: Annotated[bool, typer.Option(
             "--verbose", "-v", help="show Prefect's log lines (the UI always has them)")
         ] = False,
         debug: Annotated[bool, typer.Option(
             "--debug", help="show the traceback of a drover error")] = False) -> None:
    """Deploy, upgrade, heal and replace Talos Kubernetes clusters."""
    set_options(verbose, debug)


def _timing_table(result: dict[str, Any], flow: str) -> Table:
    table = Table(title=f"{flow} {result['cluster']}", title_justify="left")
    for column in ("stage", "duration", "nodes", "slowest node"):
        table.add_column(column, justify="right" if column == "duration" else "left")
    for row in result["timing"]:
        table.add_row(*(row[c] for c in ("stage", "duration", "nodes", "slowest node")),
                      style="bold" if row["stage"] == "total" else None)
    return table


def _print_plan(result: dict[str, Any], dry_run: bool) -> None:
    """The plan lines of a dry run under their label, or the "nothing to do" line of a run
    that changed nothing."""
    if dry_run:
        out.print(DRY_RUN, highlight=False)
    for line in result.get("plan", []):
        out.print(line, highlight=False, markup=False)


Version = Annotated[str | None, typer.Option(help="override the version in the config")]
Config = Annotated[Path, typer.Argument(help="cluster YAML, e.g. configs/lab.yaml")]
DryRun = Annotated[bool, typer.Option(help="print the diff, change nothing")]
KeepOnFailure = Annotated[bool, typer.Option(help="keep the nodes if a fresh deploy fails")]
AllowDowngrade = Annotated[bool, typer.Option(help="allow versions below what the nodes run")]


def _converge(config: Path, dry_run: bool, **parameters: Any) -> dict[str, Any]:
    """Run deploy-cluster (the converge flow) on CONFIG; config errors before Prefect starts."""
    try:
        load_spec(config)
    except SpecError as exc:
        raise fail(exc) from None
    # The flow reads configs only from its config root (a UI form may not name /etc/shadow);
    # from a terminal that root is the folder of the file the operator named.
    os.environ.setdefault("DROVER_CONFIG_ROOT", str(config.resolve().parent))
    result: dict[str, Any] = run_flow("flows.deploy", "deploy_cluster",
                                      view=None if dry_run else live_view(),
                                      config=str(config.resolve()), dry_run=dry_run,
                                      **parameters)
    return result


@app.command()
def diff(config: Config, talos_version: Version = None,
         kubernetes_version: Version = None) -> None:
    """Show what `drover apply CONFIG` would change, per node and field (changes nothing)."""
    result = _converge(config, talos_version=talos_version,
                       kubernetes_version=kubernetes_version, dry_run=True)
    err.print(DRY_RUN, highlight=False)  # stdout stays the table alone
    print(result["diff"], end="")  # plain: a markdown table stays whole, for a PR comment


@app.command()
def apply(config: Config, dry_run: DryRun = False, talos_version: Version = None,
          kubernetes_version: Version = None, keep_on_failure: KeepOnFailure = False,
          allow_downgrade: AllowDowngrade = False, wait: Wait = None) -> None:
    """Bring the cluster to CONFIG: create missing nodes, remove surplus ones, apply config
    changes, upgrade versions, in a quorum-safe order (`deploy` is the same command)."""
    result = _converge(config, talos_version=talos_version,
                       kubernetes_version=kubernetes_version, dry_run=dry_run,
                       keep_on_failure=keep_on_failure, allow_downgrade=allow_downgrade,
                       **busy(wait))
    if dry_run:
        out.print(DRY_RUN, highlight=False)
        print(result["diff"], end="")
        return
    if not result["changed"]:
        _print_plan(result, dry_run=False)
        return
    print_table(_timing_table(result, "deploy"))
    out.print(f"[bold]{result['verdict']}[/bold]", highlight=False)
    out.print(f"critical path: {result['critical_path']}", highlight=False, markup=False)
    if result.get("predicted"):
        out.print(result["predicted"], highlight=False, markup=False)
    if result.get("note"):
        out.print(f"times: {result['note']}", highlight=False, markup=False)


app.command("deploy", help="Deploy the cluster CONFIG declares: the same as apply.")(apply)


def _status(cluster: str, config: Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Each node with its drift from the file (`config`, else the spec drover last applied),
    and the notes on versions set outside the file."""
    spec = load_spec(config) if config else known_spec(cluster)
    from drover.apply import drift, overrides
    from drover.deploy import Infra, observe

    infra = Infra.open(spec)
    observed = observe(infra)
    drifted = drift(infra) if observed.nodes else {}
    notes = [f"{o['field']} was set to {o['value']} by {o['by'].split(' (')[0]} on {o['at']}, "
             "not by the file" for o in overrides(spec.name)]
    return [{"name": n.name, "role": n.role, "state": n.stage, "ready": n.ready,
             "address": n.address, "talos_version": n.talos_version,
             "drift": drifted.get(n.name, [])}
            for n in sorted(observed.nodes.values(), key=lambda n: n.name)], notes


@app.command()
def status(cluster: str, as_json: Annotated[bool, typer.Option("--json")] = False,
           config: Annotated[Path | None, typer.Option(
               help="compare with this file (default: what drover last applied)")] = None
           ) -> None:
    """Show every node of CLUSTER: role, lifecycle state, readiness, address, version, and
    where it differs from its file (drift)."""
    try:
        nodes, notes = _status(cluster, config)
    except DroverError as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(nodes, indent=2))
        return
    if not nodes:
        out.print(f"{cluster}: no nodes", highlight=False, markup=False)
        return
    table = Table(title=cluster, title_justify="left")
    for column in ("name", "role", "state", "ready", "address", "talos_version", "drift"):
        table.add_column(column)
    for node in nodes:
        table.add_row(*(str(node[c]) for c in ("name", "role", "state", "ready", "address",
                                                "talos_version")),
                      "\n".join(node["drift"]) or "-")
    print_table(table)
    for note in notes:
        out.print(f"{cluster}: {note}", highlight=False, markup=False)


@app.command()
def destroy(cluster: str, yes: Annotated[bool, typer.Option("--yes", help="confirm")] = False,
            dry_run: Annotated[bool, typer.Option()] = False, wait: Wait = None,
            config: Annotated[Path | None, typer.Option(
                help="the cluster's YAML, if drover's remembered copy is damaged")] = None
            ) -> None:
    """Delete every node of CLUSTER and forget its secrets."""
    cluster = known_cluster(cluster) if config is None else checked_name(cluster)
    if not yes and not dry_run:
        err.print(f"refusing to destroy {cluster} without --yes", highlight=False)
        raise typer.Exit(2)
    if config is not None:
        os.environ.setdefault("DROVER_CONFIG_ROOT", str(config.resolve().parent))
    result = run_flow("flows.destroy", "destroy_cluster", cluster=cluster, confirm=yes,
                      dry_run=dry_run, config=str(config.resolve()) if config else None,
                      **busy(wait))
    if dry_run:
        out.print(DRY_RUN, highlight=False)
        out.print(f"{cluster}: would delete {', '.join(result['would_delete']) or 'nothing'}",
                  highlight=False)
    else:
        out.print(f"{cluster}: deleted {len(result['deleted'])} node(s)", highlight=False)


@app.command()
def upgrade(cluster: str, talos_version: Version = None, kubernetes_version: Version = None,
            max_unavailable: Annotated[int | None, typer.Option(
                help="workers upgraded at once")] = None,
            dry_run: Annotated[bool, typer.Option(help="print the plan only")] = False,
            allow_downgrade: Annotated[bool, typer.Option(
                help="allow a version below what the nodes run")] = False,
            wait: Wait = None) -> None:
    """Roll CLUSTER to a Talos and/or Kubernetes version, never risking etcd quorum."""
    cluster = known_spec(cluster).name
    result = run_flow("flows.upgrade", "upgrade_cluster", view=None if dry_run else live_view(),
                      cluster=cluster, talos_version=talos_version,
                      kubernetes_version=kubernetes_version, max_unavailable=max_unavailable,
                      dry_run=dry_run, allow_downgrade=allow_downgrade, **busy(wait))
    if dry_run or not result["changed"]:
        _print_plan(result, dry_run)
        return
    if result.get("timing"):
        print_table(_timing_table(result, "upgrade"))
    out.print(f"{cluster}: upgraded {', '.join(result['upgraded']) or 'no node'}; "
              f"{result['verdict']}", highlight=False, markup=False)


@app.command()
def replace(cluster: str, node: str,
            reason: Annotated[str, typer.Option(help="why, for the record")] = "requested",
            dry_run: Annotated[bool, typer.Option(help="print the plan only")] = False,
            wait: Wait = None) -> None:
    """Replace NODE of CLUSTER with a fresh node (for a control plane, etcd-safely)."""
    spec = known_spec(cluster)
    cluster, node = spec.name, known_node(spec, node)
    result = run_flow("flows.replace", "replace_node", view=None if dry_run else live_view(),
                      cluster=cluster, node=node, reason=reason, dry_run=dry_run, **busy(wait))
    if dry_run:
        _print_plan(result, dry_run)
    elif result.get("by"):
        if result.get("timing"):
            print_table(_timing_table(result, "replace"))
        out.print(f"{cluster}: {node} replaced by {result['by']}; {result['verdict']}",
                  highlight=False, markup=False)
    else:
        out.print(f"{cluster}: {node} is already gone; nothing to do", highlight=False)


@app.command()
def health(cluster: str,
           unhealthy_after: Annotated[float | None, typer.Option(
               help="seconds a node may fail before replacement is requested")] = None,
           max_unhealthy_percent: Annotated[int | None, typer.Option()] = None) -> None:
    """Check CLUSTER; request replacement of nodes failing too long (a Prefect event)."""
    cluster = known_spec(cluster).name
    result = run_flow("flows.health", "check_health", cluster=cluster,
                      unhealthy_after_seconds=unhealthy_after,
                      max_unhealthy_percent=max_unhealthy_percent)
    if not result["unhealthy"]:
        out.print(f"{cluster}: every node healthy", highlight=False)
    for node in result["replace"]:
        out.print(f"{cluster}: {node} unhealthy too long: replacement requested",
                  highlight=False)
    for node, seconds in result["waiting"].items():
        out.print(f"{cluster}: {node} unhealthy for {format_duration(seconds)}",
                  highlight=False)
    if result["alert"]:
        err.print(f"alert: {result['alert']}", highlight=False, markup=False)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
