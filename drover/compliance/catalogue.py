"""The catalogue of CIS controls, read from data/<benchmark>.yaml, and Talos's own component
defaults per Talos minor version, read from data/talos-defaults.yaml (inheritance resolved).
Both are data with their sources cited in the files; this module only loads and checks them."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from drover.errors import DroverError
from drover.yamlsafe import TRUSTED

DATA = Path(__file__).parent / "data"
DECISIONS = ("static", "fixed", "not-applicable", "runtime")


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    section: str
    scored: bool  # "Automated" in CIS: kube-bench FAILs it; a Manual control WARNs
    level: int
    decide: str
    check: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    evidence: str = ""
    note: str = ""
    unset_reason: str = ""
    na_when: dict[str, Any] = field(default_factory=dict)
    false_positive: str = ""
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    benchmark: str
    kubernetes: tuple[str, ...]
    talos: tuple[str, ...]
    sources: dict[str, str]
    sections: dict[str, str]
    lists: dict[str, list[str]]
    controls: dict[str, Control]

    def section_of(self, control_id: str) -> str:
        return section_for(control_id, self.sections)


def section_for(control_id: str, sections: dict[str, str]) -> str:
    """'1.2' for 1.2.15, '2' for 2.7: the longest section id that prefixes it; an id from
    another benchmark (5.7.4) gets its parent (5.7)."""
    parts = control_id.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)
                 if ".".join(parts[:n]) in sections), ".".join(parts[:-1]) or parts[0])


def benchmarks() -> list[str]:
    return sorted(p.stem for p in DATA.glob("cis-*.yaml"))


def _control(raw: dict[str, Any], sections: dict[str, str], where: str) -> Control:
    cid = str(raw["id"])
    if raw.get("decide") not in DECISIONS:
        raise DroverError(f"{where}: control {cid}: decide must be one of {', '.join(DECISIONS)}")
    return Control(id=cid, title=raw["title"], section=section_for(cid, sections),
                   scored=bool(raw["scored"]),
                   level=int(raw.get("level", 1)), decide=raw["decide"],
                   check=raw.get("check") or {}, reason=raw.get("reason", ""),
                   evidence=raw.get("evidence", ""), note=raw.get("note", ""),
                   unset_reason=raw.get("unset_reason", ""), na_when=raw.get("na_when") or {},
                   false_positive=raw.get("kube_bench_false_positive", ""),
                   sources=tuple(raw.get("sources", ())))


@cache
def load_catalogue(benchmark: str) -> Catalogue:
    path = DATA / f"{benchmark}.yaml"
    if not path.is_file():
        raise DroverError(f"no compliance catalogue for {benchmark!r} (looked for {path}); "
                          f"known: {', '.join(benchmarks())}")
    raw = yaml.load(path.read_text(), Loader=TRUSTED)  # drover's own data, not an operator's
    sections = {str(k): v for k, v in raw["sections"].items()}
    controls = {c.id: c for c in (_control(item, sections, str(path))
                                  for item in raw["controls"])}
    return Catalogue(benchmark=raw["benchmark"], kubernetes=tuple(raw["kubernetes"]),
                     talos=tuple(raw["talos"]), sources=raw["sources"], sections=sections,
                     lists=raw["lists"], controls=controls)


@cache
def _defaults_file() -> dict[str, Any]:
    return yaml.load((DATA / "talos-defaults.yaml").read_text(), Loader=TRUSTED)


def talos_minor(version: str) -> str:
    """'v1.13' for v1.13.9 or v1.14.0-rc.1."""
    major, minor = version.lstrip("v").split(".")[:2]
    return f"v{major}.{minor}"


def components() -> dict[str, dict[str, Any]]:
    return _defaults_file()["components"]


def kubelet_fields() -> tuple[dict[str, str], list[str]]:
    """(kubelet flag -> config field, protected top-level config fields)."""
    data = _defaults_file()
    return data["kubelet_config"], data["kubelet_protected"]


@cache
def talos_defaults(version: str) -> dict[str, dict[str, Any]]:
    """Per component: args, additive, denied (and the kubelet's config) for that Talos minor."""
    versions = _defaults_file()["versions"]
    minor = talos_minor(version)
    if minor not in versions:
        raise DroverError(f"Talos {version}: data/talos-defaults.yaml has no defaults for "
                          f"{minor} (known: {', '.join(sorted(versions))}); add them from "
                          "the Talos source before judging this version")
    return _resolve(versions, minor, set())


def _resolve(versions: dict[str, Any], minor: str, seen: set[str]) -> dict[str, dict[str, Any]]:
    if minor in seen:
        raise DroverError(f"talos-defaults.yaml: {minor} inherits from itself")
    entry = versions[minor]
    base = _resolve(versions, entry["inherits"], seen | {minor}) if "inherits" in entry else {}
    result = copy.deepcopy(base)
    for name, comp in entry.items():
        if name == "inherits":
            continue
        into = result.setdefault(name, {"args": {}, "additive": [], "denied": []})
        for arg, value in (comp.get("args") or {}).items():
            if value is None:
                into["args"].pop(arg, None)
            else:
                into["args"][arg] = value
        for key in ("additive", "denied", "config", "config_from"):
            if key in comp:
                into[key] = comp[key]
        if "denied+" in comp:
            into["denied"] = [*into["denied"], *comp["denied+"]]
    return result
