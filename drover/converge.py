"""Pure planning of `drover apply`: what brings the cluster to its file, as a readable diff.

The plan compares the file (the spec, and each node's config rendered from it) with what
is observed (nodes, their versions, the config each runs) and decides, in a safe order:
nodes to create (plan_deploy), surplus nodes to remove (workers, then control planes one
at a time), machine-config changes per node with the Talos apply mode each needs, and the
rolling upgrade of versions. Version fields of the configs (installer and kubelet images)
are the upgrade's, not a config change. Secret values never appear in a diff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from drover.plan import DeployPlan, Observed, UpgradePlan, version_key
from drover.spec import split_node_name
from drover.yamlsafe import TRUSTED

#: What Talos v1.13 applies to a running node without a reboot (machined's
#: CanApplyImmediate); any other change needs one. From v1.14 every change is applied
#: without a reboot (the reboot apply mode was removed; Talos docs, editing machine
#: configuration).
NO_REBOOT = ("debug", "cluster", "machine.time", "machine.certCANs", "machine.install",
             "machine.network", "machine.nodeLabels", "machine.nodeAnnotations",
             "machine.nodeTaints", "machine.sysfs", "machine.sysctls", "machine.logging",
             "machine.controlplane", "machine.kubelet", "machine.kernel",
             "machine.registries", "machine.pods", "machine.seccompProfiles",
             "machine.features.kubernetesTalosAPIAccess", "machine.features.kubePrism",
             "machine.features.hostDNS", "machine.features.imageCache", "machine.udev")
#: the versions: changed by the rolling upgrade, never by an apply-config
VERSIONED = ("machine.install.image", "machine.kubelet.image", "cluster.apiServer.image",
             "cluster.controllerManager.image", "cluster.scheduler.image",
             "cluster.proxy.image", "cluster.etcd.image")
SECRET_WORDS = ("key", "token", "secret", "crt", "ca")


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: str
    new: str


@dataclass(frozen=True)
class NodeChange:
    node: str
    changes: list[FieldChange]
    reboot: bool


@dataclass(frozen=True)
class ApplyPlan:
    deploy: DeployPlan
    remove: list[str] = field(default_factory=list)          # workers first, then CPs
    reconfigure: list[NodeChange] = field(default_factory=list)
    upgrade: UpgradePlan | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return (self.deploy.empty and not self.remove and not self.reconfigure
                and (self.upgrade is None or self.upgrade.empty))

    def describe(self, cluster: str) -> list[str]:
        """The plan as a plan: what will happen, one line each."""
        lines = [f"{cluster}: will create {n.name} ({n.role})" for n in self.deploy.create]
        lines += [f"{cluster}: will push the first machine config to {n.name}"
                  for n in self.deploy.configure if n not in self.deploy.create]
        if self.deploy.bootstrap:
            lines.append(f"{cluster}: will bootstrap etcd on the first control plane")
        lines += [f"{cluster}: will drain and delete {name}"
                  + (" (its etcd member first)" if split_node_name(cluster, name)[0] == "cp"
                     else "")
                  for name in self.remove]
        for change in self.reconfigure:
            lines.append(f"{cluster}: will apply {len(change.changes)} config change(s) to "
                         f"{change.node} ({'reboots' if change.reboot else 'no reboot'})")
        if self.upgrade is not None and not self.upgrade.empty:
            lines += self.upgrade.describe(cluster)
        lines += [f"{cluster}: note: {note}" for note in self.notes]
        return lines or [f"{cluster}: nothing to do: the cluster matches the file"]

    def markdown(self, cluster: str) -> str:
        """The diff per node and field, for the terminal and the apply-<cluster>-diff artifact."""
        rows = [f"| {n.name} | create | {n.role} | | no |" for n in self.deploy.create]
        rows += [f"| {name} | delete | | | - |" for name in self.remove]
        for change in self.reconfigure:
            rows += [f"| {change.node} | change | `{c.path}` | {c.old} → {c.new} | "
                     f"{'yes' if change.reboot else 'no'} |" for c in change.changes]
        if self.upgrade is not None:
            for batch in self.upgrade.batches:
                rows += [f"| {name} | upgrade | Talos | → {self.upgrade.talos_version} | yes |"
                         for name in batch]
            if self.upgrade.kubernetes_version:
                rows.append(f"| (all) | upgrade | Kubernetes | → "
                            f"{self.upgrade.kubernetes_version} | no |")
        notes = "".join(f"\n- {note}" for note in self.notes)
        if not rows:
            return f"# apply {cluster}: no difference\n{notes}\n"
        return (f"# apply {cluster}: {len(rows)} difference(s)\n\n| node | action | what | "
                f"old → new | reboots |\n|---|---|---|---|---|\n" + "\n".join(rows)
                + (f"\n\nNotes:{notes}" if notes else "") + "\n")


def flatten(config: str) -> dict[str, Any]:
    """A multi-document machine config as {dotted.path: value}; other documents are
    prefixed with their kind (HostnameConfig.hostname)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            out[prefix] = value

    for doc in yaml.load_all(config, Loader=TRUSTED):  # drover's own rendering
        if not isinstance(doc, dict):
            continue
        kind = "" if doc.get("version") == "v1alpha1" else str(doc.get("kind", "document"))
        walk(kind, {k: v for k, v in doc.items() if kind == "" or k not in ("apiVersion",
                                                                              "kind")})
    return out


def shown(path: str, value: Any) -> str:
    if value is None:
        return "(unset)"
    if any(word in path.lower().split(".")[-1] for word in SECRET_WORDS):
        return "(secret)"
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000).strip()
    return text.removesuffix("\n...").removesuffix(" ...")[:120]


def config_changes(running: str, desired: str) -> list[FieldChange]:
    """Field by field, what `desired` changes of `running` (version fields left out)."""
    old, new = flatten(running), flatten(desired)
    changes = []
    for path in sorted(set(old) | set(new)):
        if path in VERSIONED or path.startswith("version") or old.get(path) == new.get(path):
            continue
        changes.append(FieldChange(path, shown(path, old.get(path)), shown(path, new.get(path))))
    return changes


def needs_reboot(changes: list[FieldChange], talos_version: str) -> bool:
    """Whether Talos must reboot the node to apply `changes` at `talos_version`."""
    if version_key(talos_version) >= (1, 14, 0):
        return False
    return any(not any(c.path == p or c.path.startswith(f"{p}.") for p in NO_REBOOT)
               and "." in c.path and not c.path[0].isupper() for c in changes)


def surplus(observed: Observed, deploy: DeployPlan) -> list[str]:
    """The nodes beyond each pool's count, workers first, control planes after (each of
    those removed one at a time, etcd member first)."""
    nodes = observed.nodes
    return sorted(deploy.unexpected, key=lambda n: (nodes[n].role == "controlplane", n)
                  if n in nodes else (True, n))


def reconfigurations(running: dict[str, str | None], desired: dict[str, str],
                     talos_version: str) -> list[NodeChange]:
    """Per node that runs a config of ours: its changes and whether they reboot it."""
    out = []
    for node in sorted(desired):
        current = running.get(node)
        if current is None:
            continue
        changes = config_changes(current, desired[node])
        if changes:
            out.append(NodeChange(node, changes, needs_reboot(changes, talos_version)))
    return out


def file_behind(observed: Observed, talos_version: str, kubernetes_version: str,
                overrides: list[dict[str, str]]) -> list[str]:
    """Notes when the cluster runs a newer version than the file says (an override)."""
    notes = []
    for field_name, wanted, running in (
            ("spec.talos.version", talos_version,
             {n.talos_version for n in observed.nodes.values() if n.talos_version}),
            ("spec.kubernetes.version", kubernetes_version,
             {n.kubernetes_version for n in observed.nodes.values() if n.kubernetes_version})):
        newer = sorted(v for v in running if version_key(v) > version_key(wanted))
        if newer:
            by = next((o for o in reversed(overrides) if o.get("field") == field_name), None)
            how = f" (set by {by['by']} on {by['at']})" if by else ""
            notes.append(f"the file is behind the cluster: {field_name} says {wanted}, the "
                         f"cluster runs {newer[-1]}{how}; update the file to {newer[-1]}, or "
                         "pass --allow-downgrade to go back")
    return notes
