"""The `compliance` section of the cluster spec: which benchmark, which level, and which controls
may fail, each waiver with a written justification and who gave it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from drover.model import Model

DEFAULT_BENCHMARK = "cis-1.12"  # kube-bench a73ce378 maps Kubernetes 1.32–1.34 (and later) to it
CONTROL_ID = r"^\d+(\.\d+){0,2}$"
MIN_JUSTIFICATION = 20


class Waiver(Model):
    control: Annotated[str, Field(pattern=CONTROL_ID, description="CIS control id, e.g. 1.2.5")]
    justification: str = Field(description="why this control may fail here (written out)")
    by: str = Field(min_length=1, max_length=200, description="who justified it, e.g. a name")

    @field_validator("justification")
    @classmethod
    def _written_out(cls, value: str) -> str:
        if len(value.strip()) < MIN_JUSTIFICATION:
            raise ValueError(f"write the justification out (at least {MIN_JUSTIFICATION} "
                             "characters): an auditor reads it next to the failing control")
        return value.strip()


class ComplianceSettings(Model):
    benchmark: str = Field(DEFAULT_BENCHMARK, description=(
        "CIS Kubernetes Benchmark version, as kube-bench names it (e.g. cis-1.12)"))
    level: Literal[1, 2] = Field(1, description="CIS profile level: 1, or 2 for every control")
    waivers: list[Waiver] = Field(default_factory=list,
                                  description="controls allowed to fail, each justified")

    @field_validator("benchmark")
    @classmethod
    def _benchmark_is_catalogued(cls, value: str) -> str:
        from drover.compliance.catalogue import benchmarks  # data files only; no cycle

        if value not in benchmarks():
            raise ValueError(f"no catalogue for benchmark {value!r}; drover knows "
                             f"{', '.join(benchmarks())}")
        return value

    @model_validator(mode="after")
    def _waivers_name_controls(self) -> ComplianceSettings:
        if not self.waivers:  # the catalogue is read only to check waivers
            return self
        from drover.compliance.catalogue import load_catalogue

        known = load_catalogue(self.benchmark).controls
        seen: set[str] = set()
        for waiver in self.waivers:
            if waiver.control not in known:
                raise ValueError(f"waiver for {waiver.control}: no such control in "
                                 f"{self.benchmark}")
            if waiver.control in seen:
                raise ValueError(f"control {waiver.control} is waived twice; keep one waiver")
            seen.add(waiver.control)
        return self

    def waiver(self, control: str) -> Waiver | None:
        return next((w for w in self.waivers if w.control == control), None)
