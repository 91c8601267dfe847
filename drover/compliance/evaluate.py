"""The static check: every control of the spec's benchmark judged from the rendered machine
configs (one per node pool, patches applied) plus Talos's defaults for its version, before
anything exists. A Manual control that Talos's own defaults already miss is a WARN (a site
decision); one the config's patches make fail is a FAIL, like every failing Automated control."""

from __future__ import annotations

import datetime as dt
from typing import Any

from drover.compliance.catalogue import Catalogue, Control, components, load_catalogue
from drover.compliance.result import (
    FAIL,
    NEEDS_RUNTIME,
    NOT_APPLICABLE,
    PASS,
    WARN,
    ControlResult,
    Report,
    apply_waiver,
)
from drover.compliance.settings import Setting, dig, resolve
from drover.errors import DroverError
from drover.machineconfig.render import render_node_config
from drover.machineconfig.secrets import CertPair, SecretsBundle
from drover.spec import ClusterSpec, Patches, inline_patches

Configs = dict[str, tuple[str, dict[str, Any]]]  # pool -> (role, v1alpha1 document)
ROLE_PATCHES = {"controlplane": "controlPlane", "worker": "worker"}


def placeholder_secrets() -> SecretsBundle:
    """Stand-ins for the cluster's secrets: the check needs their presence, never their value
    (and makes no keys). Each CA differs, as `talosctl gen secrets` makes them."""
    def pair(name: str) -> CertPair:
        return CertPair(crt=f"<{name} CA certificate>", key=f"<{name} CA key>")
    return SecretsBundle(cluster_id="<id>", cluster_secret="<secret>", bootstrap_token="<token>",
                         secretbox_encryption_secret="<secretbox key>", trustd_token="<token>",
                         os=pair("talos"), k8s=pair("kubernetes"),
                         k8s_aggregator=pair("aggregator"), etcd=pair("etcd"),
                         k8s_service_account_key="<service account key>")


def render_pools(spec: ClusterSpec) -> Configs:
    """One rendered config per pool: nodes of a pool differ only in their hostname."""
    secrets = placeholder_secrets()
    return {pool.name: (pool.role, render_node_config(spec, spec.node(pool.name, 1), secrets))
            for pool in spec.pools() if pool.count > 0 or pool.role == "controlplane"}


def without_patches(spec: ClusterSpec) -> ClusterSpec:
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"patches": Patches()})})


def evaluate_spec(spec: ClusterSpec, now: dt.datetime | None = None) -> Report:
    """The static compliance report of a spec (waivers applied)."""
    settings = spec.spec.compliance
    catalogue = load_catalogue(settings.benchmark)
    version = spec.spec.talos.version
    configs, baseline = render_pools(spec), render_pools(without_patches(spec))
    results = []
    for control in catalogue.controls.values():
        result = judge(control, catalogue, configs, version, spec)
        if result.status == FAIL and not control.scored and \
                judge(control, catalogue, baseline, version, spec).status == FAIL:
            result.status = WARN
            result.reason = ("a Manual control Talos's defaults do not meet: a site decision "
                             f"(reported, never blocking). {result.reason}")
        if control.level > settings.level and result.status != PASS:
            result.status, result.reason = NOT_APPLICABLE, (
                f"level {control.level} control; spec.compliance.level is {settings.level}")
        results.append(apply_waiver(result, settings.waiver(control.id)))
    when = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    return Report(cluster=spec.name, benchmark=catalogue.benchmark, source="static",
                  talos_version=version, kubernetes_version=spec.spec.kubernetes.version,
                  level=settings.level, created=when, results=results,
                  notes=benchmark_notes(catalogue, spec.spec.kubernetes.version))


def benchmark_notes(catalogue: Catalogue, kubernetes: str) -> list[str]:
    minor = ".".join(kubernetes.lstrip("v").split(".")[:2])
    newest = max(catalogue.kubernetes, key=lambda v: tuple(int(p) for p in v.split(".")))
    if tuple(int(p) for p in minor.split(".")) > tuple(int(p) for p in newest.split(".")):
        return [f"benchmark older than cluster: {catalogue.benchmark} covers Kubernetes up to "
                f"{newest} and the cluster runs {minor} (kube-bench maps it down to "
                f"{catalogue.benchmark}; pass --benchmark {catalogue.benchmark} explicitly)"]
    return []


def judge(control: Control, catalogue: Catalogue, configs: Configs, version: str,
          spec: ClusterSpec) -> ControlResult:
    result = ControlResult(id=control.id, title=control.title, section=control.section,
                           status=PASS, scored=control.scored, level=control.level)
    if control.decide == "not-applicable":
        result.status, result.reason = NOT_APPLICABLE, control.reason
    elif control.decide == "runtime":
        result.status, result.reason = NEEDS_RUNTIME, control.reason
    elif control.decide == "fixed":
        result.reason = "Talos sets this and allows no override"
        result.evidence = [f"Talos {version}: {control.evidence}"]
    else:
        _judge_static(control, catalogue, configs, version, spec, result)
    return result


def _control_plane(configs: Configs) -> dict[str, Any]:
    return next(doc for role, doc in configs.values() if role == "controlplane")


def _judge_static(control: Control, catalogue: Catalogue, configs: Configs, version: str,
                  spec: ClusterSpec, result: ControlResult) -> None:
    when = control.na_when
    if when and dig(_control_plane(configs), when["config"]) == when["eq"]:
        result.status, result.reason = NOT_APPLICABLE, when["reason"]
        result.evidence = [f"cp: {when['config']} = {when['eq']!r}"]
        return
    checks = control.check.get("all", [control.check])
    failed: list[Setting | None] = []
    for check in checks:
        if "setting" in check:
            failed += _judge_setting(check, catalogue, configs, version, spec, result)
        elif not _judge_config(check, _control_plane(configs), result):
            failed.append(None)
    if not failed:
        result.reason = control.note
        return
    if control.unset_reason and all(s is not None and s.value is None and not s.from_config
                                    for s in failed):
        result.status, result.reason = NOT_APPLICABLE, control.unset_reason
        return
    result.status = FAIL
    denied = [s for s in failed if s is not None and s.denied]
    if denied:
        result.reason = "; ".join(
            f"Talos refuses to let {s.path} override --{s.name.split('.', 1)[1]} "
            "(MergeDenied): the node rejects this config; remove it" for s in denied)
    else:
        result.reason = "expected " + "; ".join(_expected(c) for c in checks)
        if control.note:
            result.reason += f" ({control.note})"


def _pools_for(component: str, configs: Configs) -> list[tuple[str, dict[str, Any], str]]:
    role = components()[component]["role"]
    return [(pool, doc, r) for pool, (r, doc) in configs.items()
            if role == "all" or r == role]


def _judge_setting(check: dict[str, Any], catalogue: Catalogue, configs: Configs, version: str,
                   spec: ClusterSpec, result: ControlResult) -> list[Setting]:
    component = check["setting"].split(".", 1)[0]
    failed = []
    for pool, doc, role in _pools_for(component, configs):
        setting = resolve(check["setting"], doc, version)
        ok = not setting.denied and _test(check, setting, catalogue, doc, version)
        line = f"{pool}: {setting.shown()}"
        origin = patch_origin(spec, role, setting.path) if setting.from_config else None
        if origin:
            line += f" (from {origin})"
        if check.get("strong_ciphers") and setting.value is None:
            line += f"; {resolve(f'{component}.tls-min-version', doc, version).shown()}"
        if line not in result.evidence:
            result.evidence.append(line)
        if not ok:
            failed.append(setting)
            if setting.path not in result.paths:
                result.paths.append(setting.path)
    return failed


def patch_origin(spec: ClusterSpec, role: str, path: str) -> str | None:
    """Which of the spec's patches sets `path` for nodes of `role`, e.g. spec.patches.all[0]."""
    found = [f"spec.patches.{alias}[{index}]" for alias, index, patch
             in inline_patches(spec.spec.patches)
             if alias in ("all", ROLE_PATCHES[role]) and dig(patch, path) is not None]
    return ", ".join(found) or None


def _test(check: dict[str, Any], setting: Setting, catalogue: Catalogue, doc: dict[str, Any],
          version: str) -> bool:
    value = setting.value
    if value is None:
        if check.get("set") is False or check.get("unset_ok") or "nothave" in check:
            return True
        if "strong_ciphers" in check:
            component = setting.name.split(".", 1)[0]
            return resolve(f"{component}.tls-min-version", doc, version).value == "VersionTLS13"
        return False
    if check.get("set") is False:
        return False
    if "eq" in check and value != str(check["eq"]):
        return False
    if "noteq" in check and value == str(check["noteq"]):
        return False
    if "has" in check and check["has"] not in value:
        return False
    if "nothave" in check and check["nothave"] in value:
        return False
    if "gte" in check:
        try:
            return float(value) >= float(check["gte"])
        except ValueError:
            return False
    if "strong_ciphers" in check:
        allowed = set(catalogue.lists[f"{check['strong_ciphers']}_ciphers"])
        return all(c.strip() in allowed for c in value.split(",") if c.strip())
    return True


def _judge_config(check: dict[str, Any], doc: dict[str, Any], result: ControlResult) -> bool:
    """Checks over the control-plane config itself; evidence names paths, never secret values."""
    if "config_any" in check:
        paths = check["config_any"]
        present = [p for p in paths if dig(doc, p)]
        ok, line = bool(present), (f"{', '.join(present)} is set" if present
                                   else f"{' / '.join(paths)}: none is set")
    elif "config_distinct" in check:
        paths = check["config_distinct"]
        first, second = (dig(doc, p) for p in paths)
        ok = bool(first) and bool(second) and first != second
        line = f"{paths[0]} {'differs from' if ok else 'is the same as'} {paths[1]}"
    elif "config_set" in check:
        paths = [check["config_set"]]
        value = dig(doc, paths[0])
        ok = bool(value)
        line = f"{paths[0]}: " + (f"{len(value)} entr{'y' if len(value) == 1 else 'ies'}"
                                  if isinstance(value, list) else "set" if ok else "not set")
    else:
        paths = [check["config_item"]]
        items = dig(doc, paths[0]) or []
        ok = any(isinstance(i, dict) and i.get(check["key"]) == check["value"] for i in items)
        line = f"{paths[0]} {'has' if ok else 'has no'} entry {check['key']}: {check['value']}"
    result.evidence.append(f"cp: {line}")
    if not ok:
        result.paths.append(paths[0])
    return ok


def _expected(check: dict[str, Any]) -> str:
    if "setting" not in check:
        return "the configuration described in the evidence"
    flag = "--" + check["setting"].split(".", 1)[1]
    parts = []
    if check.get("set") is True:
        parts.append("set")
    if check.get("set") is False:
        parts.append("not set")
    for key, words in (("eq", "equal to"), ("noteq", "not equal to"), ("has", "containing"),
                       ("nothave", "not containing"), ("gte", ">=")):
        if key in check:
            parts.append(f"{words} {check[key]!r}")
    if "strong_ciphers" in check:
        parts.append("only CIS-approved cipher suites (or TLS 1.3 only)")
    unset = " (or not set)" if check.get("unset_ok") else ""
    return f"{flag} {' and '.join(parts)}{unset}"


def refuse_failures(report: Report) -> Report:
    """`report` when nothing fails unwaived; else a DroverError naming each failing control
    with the config paths and values that make it fail (the deploy pre-flight)."""
    failing = report.failing()
    if not failing:
        return report
    lines = [f"  {r.id} {r.title}: {'; '.join(e for e in r.evidence if _names_path(e, r))}"
             f" ({r.reason})" for r in failing]
    raise DroverError(
        f"{report.cluster}: compliance pre-flight: {len(failing)} {report.benchmark} control(s) "
        "fail and are not waived; nothing was created:\n" + "\n".join(lines) +
        "\nfix the patch, or waive the control in spec.compliance.waivers with a written "
        "justification and who gave it")


def _names_path(line: str, result: ControlResult) -> bool:
    return any(path in line for path in result.paths) or not result.paths
