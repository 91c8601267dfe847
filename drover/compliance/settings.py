"""What a rendered machine config makes of each component setting: Talos's default for the
version, merged with the config's extraArgs (overwrite, additive or denied, as machined merges
them) and, for the kubelet, extraConfig; each value carries the config path it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drover.compliance.catalogue import components, kubelet_fields, talos_defaults, talos_minor


@dataclass(frozen=True)
class Setting:
    name: str  # component.flag, e.g. apiserver.profiling
    value: str | None  # None: not set anywhere (the component's upstream default applies)
    path: str  # the machine-config path, or where Talos sets it
    from_config: bool  # True when the machine config (a patch) chose the value
    denied: bool = False  # the config overrides what Talos refuses to let it override

    def shown(self) -> str:
        value = "(not set)" if self.value is None else repr(self.value)
        return f"{self.path} = {value}"


def dig(doc: Any, path: str | list[str]) -> Any:
    """The value at a dotted path (or list of keys) in a mapping, None when absent."""
    keys = path.split(".") if isinstance(path, str) else path
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def text(value: Any) -> str | None:
    """A config value as the flag text the component sees."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ",".join(f"{k}={text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(str(text(v)) for v in value)
    return str(value)


def resolve(name: str, config: dict[str, Any], talos_version: str) -> Setting:
    """The effective value of `component.flag` in one node's v1alpha1 config document."""
    component, flag = name.split(".", 1)
    where = components()[component]
    defaults = talos_defaults(talos_version)[component]
    minor = talos_minor(talos_version)
    extra_path = f"{where['extra_args']}.{flag}"
    extra = text(dig(config, [*where["extra_args"].split("."), flag]))
    default = defaults["args"].get(flag)
    talos_path = f"Talos {minor} default: {where['binary']} --{flag}"
    if extra is not None:
        if flag in defaults["denied"]:
            return Setting(name, extra, extra_path, True, denied=True)
        if flag in defaults["additive"] and default:
            return Setting(name, f"{default},{extra}", extra_path, True)
        return Setting(name, extra, extra_path, True)
    if component == "kubelet":
        found = _kubelet_config(name, flag, config, defaults, minor)
        if found is not None:
            return found
    if default is not None:
        return Setting(name, default, talos_path, False)
    return Setting(name, None, extra_path, False)


def _kubelet_config(name: str, flag: str, config: dict[str, Any], defaults: dict[str, Any],
                    minor: str) -> Setting | None:
    fields, protected = kubelet_fields()
    field = fields.get(flag)
    if field is None:
        return None
    top = field.split(".")[0]
    extra_config = components()["kubelet"]["extra_config"]
    if top not in protected:
        value = text(dig(config, [*extra_config.split("."), *field.split(".")]))
        if value is not None:
            return Setting(name, value, f"{extra_config}.{field}", True)
    source = (defaults.get("config_from") or {}).get(field)
    if source is not None:
        return Setting(name, text(dig(config, source)), source, True)
    default = (defaults.get("config") or {}).get(field)
    if default is not None:
        fixed = " (not overridable)" if top in protected else ""
        return Setting(name, default, f"Talos {minor} default: kubelet.yaml {field}{fixed}",
                       False)
    return None
