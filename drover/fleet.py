"""The fleet: clusters by site (configs/fleet.yaml), how many may upgrade at once, and how a
fleet run goes out: the order of its clusters, its canary waves, the error budget that stops
it, and the rows of its report. Which run of which site's deployment is Prefect's business
(flows/fleet.py, tasks/fleet.py); this module only decides."""

from __future__ import annotations

import math
from itertools import chain, zip_longest
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator

from drover import yamlsafe
from drover.errors import SpecError
from drover.spec import DNS_LABEL, PATTERN_HINTS, VERSION, Metadata, Model
from drover.validation import describe_errors

PERCENT = r"^(100|[1-9]?[0-9](\.[0-9]+)?)%$"
Share = Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=PERCENT)]
T = TypeVar("T")


class Site(Model):
    name: Annotated[str, Field(pattern=DNS_LABEL)]
    deployment: str = Field("upgrade-cluster/upgrade-cluster", description=(
        "the Prefect deployment (flow/deployment) that upgrades this site's clusters"))
    work_pool: Annotated[str, Field(pattern=DNS_LABEL)] | None = Field(None, description=(
        "the site's own work pool, served by a worker near its hypervisors: the fleet runs "
        "`deployment` there as <deployment>-<site> (default: the deployment's own pool)"))
    clusters: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(min_length=1)


class Limits(Model):
    fleet: int = Field(4, ge=1, description="clusters upgrading at once across the fleet")
    per_site: int = Field(1, ge=1, description="clusters upgrading at once in one site")


class Rollout(Model):
    waves: list[Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=PERCENT)]] = Field(
        default_factory=lambda: [1, "5%"], description=(
            "sizes of the canary waves, a count or a share of the fleet; the clusters left "
            "after the last form one more wave. Each wave starts when the one before passed"))
    error_budget: Share = Field(0, description=(
        "failed clusters a wave may have (a count, or a share of the wave) and the run go on"))
    worker_timeout_seconds: float = Field(90, gt=0, description=(
        "a site whose workers sent no heartbeat this long has its clusters reported not done"))


class FleetBody(Model):
    talos_version: Annotated[str, Field(pattern=VERSION)] | None = None
    kubernetes_version: str | None = None
    max_unavailable: int | None = Field(None, ge=1)
    limits: Limits = Field(default_factory=Limits)
    rollout: Rollout = Field(default_factory=Rollout)
    sites: list[Site] = Field(min_length=1)

    @field_validator("sites")
    @classmethod
    def _each_cluster_once(cls, sites: list[Site]) -> list[Site]:
        seen: dict[str, str] = {}
        names = [site.name for site in sites]
        if len(set(names)) < len(names):
            raise ValueError("a site is listed twice: " + ", ".join(
                sorted({n for n in names if names.count(n) > 1})))
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

    def work_pools(self) -> list[str]:
        """The sites' own work pools, each to be served by a worker of its own."""
        return list(dict.fromkeys(s.work_pool for s in self.spec.sites if s.work_pool))


def site_limit(site: str) -> str:
    return f"drover-site-{site}"


def site_deployment(site: Site) -> str:
    """flow/deployment the site's clusters run on: the site's copy when it has its own pool."""
    return f"{site.deployment}-{site.name}" if site.work_pool else site.deployment


def load_fleet(path: str | Path) -> FleetSpec:
    path = Path(path)
    data = yamlsafe.load_file(path)  # SpecError naming the file; never quotes its lines
    try:
        return FleetSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(str(path), describe_errors(exc, FleetSpec, PATTERN_HINTS)) from None


def fleet_order(sites: list[Site]) -> list[tuple[Site, str]]:
    """Every (site, cluster), round-robin over the sites, so a canary wave spans sites and one
    busy site does not hold every thread."""
    return [pair for pair in chain.from_iterable(zip_longest(*[
        [(site, cluster) for cluster in site.clusters] for site in sites])) if pair]


def share_of(share: int | str, total: int) -> int:
    """A count as given, or a share ("5%") of `total` rounded up."""
    if isinstance(share, int):
        return share
    return math.ceil(float(share.rstrip("%")) * total / 100)


def split_waves(items: list[T], waves: list[int | str]) -> list[list[T]]:
    """`items` cut into the rollout's waves (a share is of the whole fleet, at least one
    cluster); what is left after the last wave is one more; empty waves are dropped."""
    cuts, start = [], 0
    for wave in waves:
        size = max(1, share_of(wave, len(items)))
        cuts.append(items[start:start + size])
        start += size
    cuts.append(items[start:])
    return [cut for cut in cuts if cut]


def wave_threads(wave_size: int, limits: Limits) -> int:
    """Threads of the fleet flow for a wave: twice the fleet limit (capped by the wave, and
    at 64). Each thread holds a cluster until it gets a fleet and a site slot, so a thread
    whose site is full never leaves a free fleet slot idle while another site's cluster
    waits; and few enough that the waiters' retries stay a light load on the server."""
    return max(1, min(wave_size, 2 * limits.fleet, 64))


def heartbeat_check_seconds(worker_timeout: float) -> float:
    """Seconds between looks at a site's worker heartbeat while one of its runs goes on (its
    end wakes the fleet flow at once, by event): a third of the timeout, so a silent worker
    is caught within 4/3 of it; 1 to 10."""
    return max(1.0, min(10.0, worker_timeout / 3))


def over_budget(failed: int, wave_size: int, budget: int | str) -> bool:
    """True when a wave's failures exceed the error budget (a count, or a share of the wave)."""
    return failed > share_of(budget, wave_size)


def target_tag(fleet: str, parameters: dict[str, object]) -> str:
    """The tag of this fleet's runs toward one target, so a re-run finds what is done."""
    versions = "-".join(str(parameters.get(k) or "same") for k in
                        ("talos_version", "kubernetes_version"))
    return f"drover-fleet/{fleet}/{versions}"


def untouched_rows(pairs: list[tuple[Site, str]], wave: int, why: str) -> list[dict[str, str]]:
    return [{"site": site.name, "cluster": cluster, "wave": str(wave), "outcome": "untouched",
             "detail": why, "flow_run": "-"} for site, cluster in pairs]


def summarize(rows: list[dict[str, str]]) -> str:
    """'3 upgraded, 1 failed, ...': the count of each outcome present, in a fixed order."""
    order = ("upgraded", "skipped", "done earlier", "failed", "not done", "untouched")
    return ", ".join(f"{n} {o}" for o in order
                     if (n := sum(r["outcome"] == o for r in rows)))
