"""`drover compliance`: CIS Kubernetes Benchmark evidence. `check CONFIG` judges a config before
anything exists (exit 1 on an unwaived FAIL); `import CLUSTER RESULT.json` triages kube-bench
output run elsewhere; `history CLUSTER` shows the trend; `report CLUSTER` re-exports the latest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from drover.cli_common import checked_name, fail, known_clusters, out, print_table, unknown_cluster
from drover.errors import DroverError, SpecError

if TYPE_CHECKING:  # the compliance package loads when a command runs, not with `drover`
    from drover.compliance.result import Report
    from drover.spec import ClusterSpec

compliance_app = typer.Typer(help="CIS Kubernetes Benchmark evidence (Talos-aware).",
                             no_args_is_help=True)
JsonOut = Annotated[Path | None, typer.Option("--json", help="write the report as JSON")]
JunitOut = Annotated[Path | None, typer.Option("--junit", help="write JUnit XML")]
MarkdownOut = Annotated[Path | None, typer.Option("--markdown", help="write the auditor report")]


def _table(report: Report) -> Table:
    from drover.compliance.report import summary, table_rows
    from drover.compliance.result import STATUSES

    table = Table(title=summary(report), title_justify="left")
    rows = table_rows(report)
    shown = [s for s in STATUSES if any(row[s] for row in rows)]
    table.add_column("section")
    for status in shown:
        table.add_column(status, justify="right")
    for row in rows:
        table.add_row(row["section"], *(str(row[s] or "") for s in shown),
                      style="bold" if row["section"] == "total" else None)
    return table


def _show(report: Report, json_out: Path | None, junit: Path | None,
          markdown_out: Path | None) -> None:
    from drover.compliance.report import junit_xml, markdown, write_json

    print_table(_table(report))
    for note in report.notes:
        out.print(f"note: {note}", highlight=False, markup=False)
    for r in report.failing():
        out.print(f"FAIL {r.id} {r.title}: {'; '.join(r.evidence)} ({r.reason})",
                  highlight=False, markup=False)
    if json_out:
        write_json(report, json_out)
    if junit:
        junit.write_text(junit_xml(report))
    if markdown_out:
        markdown_out.write_text(markdown(report))


@compliance_app.command("check")
def check(config: Annotated[Path, typer.Argument(help="cluster YAML, e.g. configs/lab.yaml")],
          json_out: JsonOut = None, junit: JunitOut = None,
          markdown_out: MarkdownOut = None) -> None:
    """Judge CONFIG statically (rendered configs + Talos defaults); exit 1 on an unwaived FAIL."""
    from drover.compliance.evaluate import evaluate_spec
    from drover.spec import load_spec

    try:
        report = evaluate_spec(load_spec(config))
    except (SpecError, DroverError) as exc:
        raise fail(exc) from None
    _show(report, json_out, junit, markdown_out)
    if report.failing():
        raise typer.Exit(1)


def _spec_of(cluster: str, config: Path | None) -> ClusterSpec:
    from drover.home import remembered_spec
    from drover.spec import load_spec

    spec = load_spec(config) if config else remembered_spec(cluster)
    if spec is None:
        raise DroverError(f"{cluster}: drover has no spec of this cluster; pass --config "
                          "with its cluster YAML")
    if spec.name != cluster:
        raise DroverError(f"{config}: declares cluster {spec.name!r}, not {cluster!r}")
    return spec


@compliance_app.command("import")
def import_result(cluster: str, result: Annotated[Path, typer.Argument(
                      help="kube-bench JSON (kube-bench run --json)")],
                  config: Annotated[Path | None, typer.Option(
                      help="the cluster YAML (default: the spec drover remembers)")] = None,
                  json_out: JsonOut = None, junit: JunitOut = None,
                  markdown_out: MarkdownOut = None) -> None:
    """Triage kube-bench output run elsewhere against CLUSTER's spec and keep it in history."""
    from drover.compliance.evaluate import evaluate_spec
    from drover.compliance.history import ComplianceHistory
    from drover.compliance.kubebench import merge, parse_kube_bench, triage

    name = checked_name(cluster)
    if config is None and name not in known_clusters():
        raise unknown_cluster(name, "pass --config with its cluster YAML")
    try:
        spec = _spec_of(name, config)
        try:
            text = result.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise DroverError(f"{result}: cannot be read ({reason})") from None
        static = evaluate_spec(spec)
        runtime = triage(parse_kube_bench(text, str(result)), spec.spec.compliance, name,
                         spec.spec.talos.version, spec.spec.kubernetes.version, static=static)
        report = merge(static, runtime)
        ComplianceHistory().record(report)
    except (SpecError, DroverError) as exc:
        raise fail(exc) from None
    _show(report, json_out, junit, markdown_out)


@compliance_app.command("history")
def history(cluster: str, limit: Annotated[int, typer.Option(help="reports shown")] = 20) -> None:
    """The trend of CLUSTER's compliance reports, oldest first."""
    from drover.compliance.history import ComplianceHistory

    try:
        entries = ComplianceHistory().entries(checked_name(cluster), limit)
    except DroverError as exc:
        raise fail(exc) from None
    if not entries and cluster not in known_clusters():
        raise unknown_cluster(cluster)
    if not entries:
        out.print(f"{cluster}: no compliance reports yet (deploy, or `drover compliance "
                  "import`)", highlight=False)
        return
    table = Table(title=f"compliance {cluster}", title_justify="left")
    for column in ("when", "source", "benchmark", "talos", "kubernetes", "PASS", "FAIL",
                   "WAIVED", "WARN", "FALSE-POSITIVE", "trend"):
        table.add_column(column)
    previous: int | None = None
    for e in entries:
        trend = "" if previous is None else ("better" if e.failed < previous else
                                             "worse" if e.failed > previous else "same")
        previous = e.failed
        table.add_row(e.created, e.source, e.benchmark, e.talos, e.kubernetes, str(e.passed),
                      str(e.failed), str(e.totals.get("WAIVED", 0)),
                      str(e.totals.get("WARN", 0)), str(e.totals.get("FALSE-POSITIVE", 0)),
                      trend)
    print_table(table)


@compliance_app.command("report")
def report(cluster: str, json_out: JsonOut = None, junit: JunitOut = None,
           markdown_out: MarkdownOut = None) -> None:
    """Show (and export) CLUSTER's latest compliance report."""
    from drover.compliance.history import ComplianceHistory

    try:
        latest = ComplianceHistory().latest(checked_name(cluster))
    except DroverError as exc:
        raise fail(exc) from None
    if latest is None and cluster not in known_clusters():
        raise unknown_cluster(cluster)
    if latest is None:
        raise fail(DroverError(f"{cluster}: no compliance report yet; deploy it, or run "
                               "`drover compliance import`"))
    _show(latest, json_out, junit, markdown_out)
