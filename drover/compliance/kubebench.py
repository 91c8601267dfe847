"""kube-bench's JSON output (`kube-bench run --json`), read and triaged against the catalogue:
PASS, a genuine FAIL (or WARN for a Manual control), a Talos false positive (the control is not
applicable on Talos, or kube-bench's audit misreads how Talos configures it), waived, INFO
(skipped), or UNKNOWN for an id the catalogue does not hold: reported, never dropped."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from drover.compliance.catalogue import load_catalogue
from drover.compliance.model import ComplianceSettings
from drover.compliance.result import (
    FAIL,
    FALSE_POSITIVE,
    INFO,
    NEEDS_RUNTIME,
    NOT_APPLICABLE,
    PASS,
    UNKNOWN,
    WAIVED,
    WARN,
    ControlResult,
    Report,
    apply_waiver,
)
from drover.errors import DroverError

KB_STATUSES = ("PASS", "FAIL", "WARN", "INFO")
WORST = {FAIL: 5, WARN: 4, UNKNOWN: 3, FALSE_POSITIVE: 2, PASS: 1, INFO: 0}
SHOWN = 160  # characters of kube-bench's actual_value kept as evidence


@dataclass(frozen=True)
class KubeBenchResult:
    id: str
    status: str
    text: str
    node_type: str
    version: str
    scored: bool
    audit: str
    actual: str


def malformed(source: str, problem: str) -> DroverError:
    return DroverError(f"{source}: not kube-bench JSON output ({problem}); produce it with "
                       "`kube-bench run --json` (or --json --outputfile FILE)")


def parse_kube_bench(text: str, source: str) -> list[KubeBenchResult]:
    """Every result in kube-bench's JSON: {"Controls": [...], "Totals": ...}, or the bare list
    --nototals prints. Lenient about fields older versions lack; strict about the shape."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise malformed(source, f"invalid JSON at line {exc.lineno} column {exc.colno}") from None
    controls = data.get("Controls") if isinstance(data, dict) else data
    if not isinstance(controls, list):
        raise malformed(source, 'no "Controls" list at the top level')
    found = []
    for i, block in enumerate(controls):
        where = f"Controls[{i}]"
        if not isinstance(block, dict) or not isinstance(block.get("tests"), list):
            raise malformed(source, f'{where} has no "tests" list')
        for j, group in enumerate(block["tests"]):
            if not isinstance(group, dict) or not isinstance(group.get("results"), list):
                raise malformed(source, f'{where}.tests[{j}] has no "results" list')
            for k, item in enumerate(group["results"]):
                found.append(_result(item, block, source, f"{where}.tests[{j}].results[{k}]"))
    return found


def _result(item: Any, block: dict[str, Any], source: str, where: str) -> KubeBenchResult:
    if not isinstance(item, dict):
        raise malformed(source, f"{where} is not an object")
    number, status = item.get("test_number"), item.get("status")
    if not isinstance(number, str) or not number:
        raise malformed(source, f'{where} has no "test_number"')
    if status not in KB_STATUSES:
        raise malformed(source, f'{where} ({number}): status must be one of '
                        f'{", ".join(KB_STATUSES)}')
    return KubeBenchResult(id=number, status=status, text=str(item.get("test_desc", "")),
                           node_type=str(block.get("node_type", "")),
                           version=str(block.get("version", "")),
                           scored=bool(item.get("scored", False)), audit=str(item.get("audit", "")),
                           actual=str(item.get("actual_value", ""))[:SHOWN])


def triage(results: list[KubeBenchResult], settings: ComplianceSettings, cluster: str,
           talos_version: str, kubernetes_version: str, static: Report | None = None,
           source: str = "kube-bench", now: dt.datetime | None = None) -> Report:
    """One result per control id (the worst over every node kube-bench ran on)."""
    catalogue = load_catalogue(settings.benchmark)
    merged: dict[str, ControlResult] = {}
    versions = sorted({r.version for r in results if r.version})
    for item in results:
        judged = _judge(item, catalogue, static)
        seen = merged.get(item.id)
        if seen is None or WORST[judged.status] > WORST[seen.status]:
            judged.evidence = [*(seen.evidence if seen else []), *judged.evidence]
            merged[item.id] = judged
        else:
            seen.evidence += [e for e in judged.evidence if e not in seen.evidence]
    order = list(catalogue.controls)
    ranked = sorted(merged.values(), key=lambda r: (
        order.index(r.id) if r.id in order else len(order), r.id))
    report = Report(cluster=cluster, benchmark=settings.benchmark, source=source,
                    talos_version=talos_version, kubernetes_version=kubernetes_version,
                    level=settings.level,
                    created=(now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
                    results=[apply_waiver(r, settings.waiver(r.id)) for r in ranked])
    if versions and versions != [settings.benchmark]:
        report.notes.append(f"kube-bench ran {', '.join(versions)} but the cluster's spec names "
                            f"{settings.benchmark}: pass --benchmark {settings.benchmark}")
    return report


def _judge(item: KubeBenchResult, catalogue: Any, static: Report | None) -> ControlResult:
    control = catalogue.controls.get(item.id)
    evidence = [f"kube-bench {item.node_type or 'node'}: {item.status}"
                + (f", actual: {item.actual!r}" if item.actual else "")]
    if control is None:
        return ControlResult(id=item.id, title=item.text, section=catalogue.section_of(item.id),
                             status=UNKNOWN, scored=item.scored, evidence=evidence, reason=(
                                 f"not a control of {catalogue.benchmark}: kube-bench ran "
                                 f"{item.version or 'another benchmark'}; review it by hand"))
    result = ControlResult(id=item.id, title=control.title, section=control.section,
                           status=item.status, scored=control.scored, level=control.level,
                           evidence=evidence)
    if item.status in (PASS, INFO):
        result.reason = "skipped by kube-bench (--skip or type skip)" if item.status == INFO \
            else ""
        return result
    decided = static.by_id(item.id) if static else None
    if control.decide == "not-applicable":
        result.status, result.reason = FALSE_POSITIVE, f"not applicable on Talos: {control.reason}"
    elif control.decide == "fixed":
        result.status = FALSE_POSITIVE
        result.reason = f"Talos fixes this: {control.evidence}"
        if control.false_positive:
            result.reason += f"; {control.false_positive}"
    elif decided is not None and decided.status == NOT_APPLICABLE:
        result.status, result.reason = FALSE_POSITIVE, decided.reason
    elif control.false_positive and (decided is None or decided.status == PASS):
        result.status = FALSE_POSITIVE
        result.reason = control.false_positive
        if decided is not None:
            result.evidence += [f"static: {e}" for e in decided.evidence]
    return result


def merge(static: Report, runtime: Report) -> Report:
    """The static report with runtime evidence. kube-bench's verdict wins for a NEEDS-RUNTIME
    control, and wherever it found a genuine FAIL (the running cluster drifted from its
    config), a Talos false positive, a waiver or an unknown id; otherwise the static verdict
    stands with kube-bench's line added to its evidence."""
    seen = {r.id: r for r in runtime.results}
    results = []
    for result in static.results:
        found = seen.pop(result.id, None)
        if found is None:
            results.append(result)
        elif result.status == NEEDS_RUNTIME or found.status in (FALSE_POSITIVE, WAIVED):
            results.append(found)
        elif found.status == FAIL:
            found.reason = "kube-bench found it failing on the running cluster" + (
                " although the config passes: the cluster drifted from its config"
                if result.status == PASS else "") + (f"; {result.reason}" if result.reason
                                                     else "")
            found.evidence = [*result.evidence, *found.evidence]
            results.append(found)
        else:
            result.evidence = [*result.evidence, *found.evidence]
            results.append(result)
    results += seen.values()  # unknown ids stay in the report
    return Report(**{**static.__dict__, "source": f"static+{runtime.source}",
                     "results": results, "notes": [*static.notes, *runtime.notes]})
