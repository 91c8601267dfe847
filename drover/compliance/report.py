"""A compliance report rendered for people and tools: the table of counts per section and
status, the auditor's markdown (every control with status, evidence, reason and waiver), and
JSON and JUnit XML exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from drover.compliance.catalogue import load_catalogue
from drover.compliance.result import (
    FAIL,
    FALSE_POSITIVE,
    INFO,
    NEEDS_RUNTIME,
    NOT_APPLICABLE,
    STATUSES,
    UNKNOWN,
    WAIVED,
    WARN,
    Report,
)


def table_rows(report: Report) -> list[dict[str, Any]]:
    """One row per section (then a total): its title and a count per status."""
    sections = load_catalogue(report.benchmark).sections
    rows = [{"section": f"{sid} {sections.get(sid, '')}".strip(), **counts}
            for sid, counts in report.counts().items()]
    rows.append({"section": "total", **report.totals()})
    return rows


def summary(report: Report) -> str:
    totals = report.totals()
    shown = ", ".join(f"{n} {s}" for s, n in totals.items() if n)
    verdict = "blocked" if totals[FAIL] else "passes"
    return (f"{report.cluster}: {report.benchmark} ({report.source}) {verdict}: {shown}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report) -> str:
    """The auditor's report: every control, in catalogue order."""
    catalogue = load_catalogue(report.benchmark)
    lines = [f"# {report.benchmark} compliance: {report.cluster}", "",
             f"Evidence: {report.source}, {report.created}. Talos {report.talos_version}, "
             f"Kubernetes {report.kubernetes_version}, CIS level {report.level}.", "",
             f"**{summary(report)}**", ""]
    lines += [f"> {note}" for note in report.notes] + ([""] if report.notes else [])
    lines += ["| section | " + " | ".join(STATUSES) + " |",
              "|---|" + "---:|" * len(STATUSES)]
    lines += ["| " + " | ".join(str(row[k]) for k in ("section", *STATUSES)) + " |"
              for row in table_rows(report)]
    lines += ["", "| control | status | evidence | reason | waiver |", "|---|---|---|---|---|"]
    for r in report.results:
        waiver = (f"{r.waived_status} waived by {r.waiver['by']}: {r.waiver['justification']}"
                  if r.waiver else "")
        kind = "" if r.scored else " (Manual)"
        lines.append(f"| {r.id} {_cell(r.title)}{kind} | {r.status} | "
                     f"{_cell('<br>'.join(r.evidence))} | {_cell(r.reason)} | {_cell(waiver)} |")
    lines += ["", "Sources: " + "; ".join(f"[{k}] {v}" for k, v in catalogue.sources.items())]
    return "\n".join(lines) + "\n"


def write_json(report: Report, path: Path) -> Path:
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def junit_xml(report: Report) -> str:
    """JUnit XML: a testsuite per section, a testcase per control; FAIL is a failure, N/A,
    runtime, waived, info and false positives are skipped (with the reason), UNKNOWN an error."""
    sections = load_catalogue(report.benchmark).sections
    suites = ET.Element("testsuites", name=f"{report.benchmark} {report.cluster}")
    for sid in report.counts():
        results = [r for r in report.results if r.section == sid]
        suite = ET.SubElement(suites, "testsuite", name=f"{sid} {sections.get(sid, '')}".strip(),
                              tests=str(len(results)),
                              failures=str(sum(r.status == FAIL for r in results)),
                              errors=str(sum(r.status == UNKNOWN for r in results)),
                              skipped=str(sum(r.status in _SKIPPED for r in results)))
        for r in results:
            case = ET.SubElement(suite, "testcase", name=f"{r.id} {r.title}",
                                 classname=f"{report.benchmark}.{sid}")
            detail = "\n".join([*r.evidence, r.reason]).strip()
            if r.status == FAIL:
                ET.SubElement(case, "failure", message=r.reason or "failed").text = detail
            elif r.status == UNKNOWN:
                ET.SubElement(case, "error", message=r.reason).text = detail
            elif r.status in _SKIPPED:
                why = (f"{r.status}: {r.waiver['justification']} ({r.waiver['by']})"
                       if r.waiver else f"{r.status}: {r.reason}")
                ET.SubElement(case, "skipped", message=why)
            if r.evidence:
                ET.SubElement(case, "system-out").text = "\n".join(r.evidence)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, "unicode") + "\n"


_SKIPPED = (NOT_APPLICABLE, NEEDS_RUNTIME, WAIVED, INFO, FALSE_POSITIVE, WARN)
