"""The fleet: clusters by site, and how many may upgrade at once (configs/fleet.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator

from drover import yamlsafe
from drover.errors import SpecError
from drover.spec import DNS_LABEL, PATTERN_HINTS, VERSION, Metadata, Model
from drover.validation import describe_errors


class Site(Model):
    name: Annotated[str, Field(pattern=DNS_LABEL)]
    deployment: str = Field("upgrade-cluster/upgrade-cluster", description=(
        "the Prefect deployment (flow/deployment) that upgrades this site's clusters; "
        "its work pool has workers near the site's hypervisors"))
    clusters: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(min_length=1)


class Limits(Model):
    fleet: int = Field(4, ge=1, description="clusters upgrading at once across the fleet")
    per_site: int = Field(1, ge=1, description="clusters upgrading at once in one site")


class FleetBody(Model):
    talos_version: Annotated[str, Field(pattern=VERSION)] | None = None
    kubernetes_version: str | None = None
    max_unavailable: int | None = Field(None, ge=1)
    limits: Limits = Field(default_factory=Limits)
    sites: list[Site] = Field(min_length=1)

    @field_validator("sites")
    @classmethod
    def _each_cluster_once(cls, sites: list[Site]) -> list[Site]:
        seen: dict[str, str] = {}
        for site in sites:
            for cluster in site.clusters:
                if cluster in seen:
                    raise ValueError(f"cluster {cluster!r} is listed in both {seen[cluster]!r} "
                                     f"and {site.name!r}")
                seen[cluster] = site.name
        return sites


class FleetSpec(Model):
    api_version: Literal["drover/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Fleet"]
    metadata: Metadata
    spec: FleetBody

    def concurrency_limits(self) -> dict[str, int]:
        """Prefect global concurrency limits the fleet flow takes a slot of, per cluster."""
        limits = {"drover-fleet": self.spec.limits.fleet}
        limits |= {site_limit(s.name): self.spec.limits.per_site for s in self.spec.sites}
        return limits


def site_limit(site: str) -> str:
    return f"drover-site-{site}"


def load_fleet(path: str | Path) -> FleetSpec:
    path = Path(path)
    data = yamlsafe.load_file(path)  # SpecError naming the file; never quotes its lines
    try:
        return FleetSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(str(path), describe_errors(exc, FleetSpec, PATTERN_HINTS)) from None
