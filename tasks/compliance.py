"""Tasks: the CIS compliance pre-flight (nothing is created when an unwaived control fails),
runtime evidence from kube-bench (emulated on the lab), and the report published as
`compliance-<cluster>` artifacts and kept in the compliance history."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from drover import deploy
from drover.compliance.evaluate import evaluate_spec, refuse_failures
from drover.compliance.history import ComplianceHistory
from drover.compliance.kubebench import merge, parse_kube_bench, triage
from drover.compliance.report import markdown, summary, table_rows
from drover.compliance.result import Report
from drover.spec import ClusterSpec

KUBE_BENCH_TIMEOUT = 600.0


@task(name="check-compliance", cache_policy=NONE)
def check_compliance(spec: ClusterSpec) -> Report:
    """The static check; raises, naming each failing control and its config path."""
    report = evaluate_spec(spec)
    get_run_logger().info("%s", summary(report))
    return refuse_failures(report)


@task(name="runtime-compliance", cache_policy=NONE)
def runtime_compliance(spec: ClusterSpec, static: Report | None = None) -> Report:
    """kube-bench on every node (a Job per node; on the lab, emulated from its nodes), triaged
    and merged into the static report."""
    static = static or evaluate_spec(spec)
    infra = deploy.Infra.open(spec)
    outputs = infra.kube.kube_bench(infra.clock, KUBE_BENCH_TIMEOUT)
    results = [r for i, text in enumerate(outputs)
               for r in parse_kube_bench(text, f"kube-bench output {i + 1} of {spec.name}")]
    source = "lab" if spec.spec.talos.api == "lab" else "kube-bench"
    runtime = triage(results, spec.spec.compliance, spec.name, spec.spec.talos.version,
                     spec.spec.kubernetes.version, static=static, source=source)
    return merge(static, runtime)


@task(name="publish-compliance", cache_policy=NONE)
def publish_compliance(spec: ClusterSpec, report: Report) -> str:
    ComplianceHistory().record(report)
    key = f"compliance-{spec.name}"
    create_table_artifact(table_rows(report), key=key, description=summary(report))
    create_markdown_artifact(markdown(report), key=f"{key}-report",
                             description=f"{report.benchmark} evidence for {spec.name}")
    get_run_logger().info("%s", summary(report))
    return summary(report)
