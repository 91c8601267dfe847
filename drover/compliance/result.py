"""One compliance report: a result per control (status, reason, evidence, waiver), whatever
decided it: the static evaluator, a kube-bench run, or the lab's emulation of one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, WARN, WAIVED = "PASS", "FAIL", "WARN", "WAIVED"
NOT_APPLICABLE, NEEDS_RUNTIME = "NOT-APPLICABLE", "NEEDS-RUNTIME"
FALSE_POSITIVE, UNKNOWN, INFO = "FALSE-POSITIVE", "UNKNOWN", "INFO"
#: the order of the report's columns
STATUSES = (PASS, FAIL, WARN, WAIVED, FALSE_POSITIVE, NOT_APPLICABLE, NEEDS_RUNTIME, INFO,
            UNKNOWN)


@dataclass
class ControlResult:
    id: str
    title: str
    section: str
    status: str
    scored: bool = True
    level: int = 1
    reason: str = ""
    evidence: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # config paths that made it fail
    waiver: dict[str, str] | None = None  # {justification, by} when waived
    waived_status: str = ""  # FAIL or WARN before the waiver


@dataclass
class Report:
    cluster: str
    benchmark: str
    source: str  # static | kube-bench | lab
    talos_version: str
    kubernetes_version: str
    level: int
    created: str
    results: list[ControlResult]
    notes: list[str] = field(default_factory=list)

    def failing(self) -> list[ControlResult]:
        """Unwaived FAILs: what blocks a deploy."""
        return [r for r in self.results if r.status == FAIL]

    def by_id(self, control: str) -> ControlResult:
        return next(r for r in self.results if r.id == control)

    def counts(self) -> dict[str, dict[str, int]]:
        """section -> status -> number of controls, sections in catalogue order."""
        table: dict[str, dict[str, int]] = {}
        for result in self.results:
            row = table.setdefault(result.section, dict.fromkeys(STATUSES, 0))
            row[result.status] += 1
        return table

    def totals(self) -> dict[str, int]:
        totals = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            totals[result.status] += 1
        return totals

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        results = [ControlResult(**r) for r in data["results"]]
        return cls(**{**data, "results": results})


def apply_waiver(result: ControlResult, waiver: Any) -> ControlResult:
    """A FAIL or WARN the spec waives becomes WAIVED, keeping what it was and who said so."""
    if waiver is None or result.status not in (FAIL, WARN):
        return result
    result.waived_status = result.status
    result.status = WAIVED
    result.waiver = {"justification": waiver.justification, "by": waiver.by}
    return result
