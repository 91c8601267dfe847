"""The operational settings of a cluster spec: deployment, upgrade and health settings, and
each timed flow's own target and baseline (`spec.targets`). The deploy target may still be
given the old way (`spec.deployment.targetMinutes` / `baselineMinutes`): `merge_deploy_targets`
makes both places agree, and refuses a config that gives the two different values.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from drover.model import Model

#: Kubespray's graceful upgrade, measured: "I ran the upgrade-cluster.yml play multiple times on
#: my small dev cluster of 6 nodes, each time it takes about 30 minutes to complete (mostly from
#: downloading and draining)", 0:32:10 in the profile shown (rptaylor, 2021-10-07,
#: https://github.com/kubernetes-sigs/kubespray/pull/8050). 30 min / 6 nodes = 5 min per node;
#: upgrade-cluster.yml rolls control planes one at a time (serial: 1) and workers in batches
#: (serial: 20% by default), so its time grows with the node count.
KUBESPRAY_UPGRADE_SOURCE = (
    "Kubespray upgrade-cluster.yml on 6 nodes: about 30 min each run, i.e. 5 min per node "
    "(rptaylor, 2021-10-07, https://github.com/kubernetes-sigs/kubespray/pull/8050)")
#: "went from 45 minutes with Kubespray to under 10 minutes with Talos Linux" (Equinix, a
#: Kubernetes deployment on VMs; notes/talos.md)
KUBESPRAY_DEPLOY_SOURCE = (
    "Kubespray deploy on VMs at Equinix: 45 min (https://www.siderolabs.com/case-studies/"
    "why-equinix-switched-from-kubespray-to-talos-linux-and-the-adventures-that-followed/)")


class Timeouts(Model):
    provision_seconds: float = Field(900, gt=0, description="create until maintenance mode")
    configure_seconds: float = Field(1200, gt=0, description="config push until running")
    bootstrap_seconds: float = Field(600, gt=0)
    health_seconds: float = Field(1200, gt=0, description="until every node is Ready")


class DeploymentSettings(Model):
    target_minutes: float = Field(10, gt=0, description=(
        "the deploy target; the same as spec.targets.deploy.targetMinutes (give either)"))
    baseline_minutes: float | None = Field(45, gt=0, description=(
        "the deploy baseline; the same as spec.targets.deploy.baselineMinutes (give either)"))
    keep_on_failure: bool = Field(False, description="keep nodes of a failed fresh deploy")
    max_parallel: int = Field(16, ge=1, le=256, description="nodes provisioned at once")
    retries: int = Field(3, ge=0, le=10, description="retries of a step on transient errors")
    retry_delay_seconds: float = Field(5, ge=0)
    timeouts: Timeouts = Field(default_factory=Timeouts)


class UpgradeSettings(Model):
    max_unavailable: int = Field(1, ge=1, description="workers upgraded at once")
    drain_timeout_seconds: float = Field(300, gt=0)


class HealthSettings(Model):
    interval_seconds: float = Field(300, gt=0)
    unhealthy_after_seconds: float = Field(300, gt=0)
    max_unhealthy_percent: int = Field(40, ge=0, le=100)


class FlowTarget(Model):
    """A whole-run target and baseline (deploy, replace, recover): not scaled by node count."""

    target_minutes: float = Field(gt=0, description="the goal for one run of this flow")
    baseline_minutes: float | None = Field(None, gt=0, description=(
        "what the same job takes with the tool drover replaces (none: no baseline)"))
    baseline_name: str = Field("", max_length=80, description=(
        "the baseline in a few words, named in the verdict, e.g. 'Kubespray cluster.yml'"))
    baseline_source: str = Field("", max_length=400, description="where the baseline comes from")


class PerNodeTarget(Model):
    """A target and baseline per node (upgrade): the run's are these times the node count.
    3 min per node: a Talos node's install + kexec reboot + Ready in the lab's realistic
    profile is about 3m15s, so a one-at-a-time roll just misses it and parallel workers meet
    it; the baseline is Kubespray's measured 5 min per node (KUBESPRAY_UPGRADE_SOURCE)."""

    per_node_target_minutes: float = Field(3, gt=0, description="the goal per node upgraded")
    baseline_per_node_minutes: float | None = Field(5, gt=0, description=(
        "what the baseline tool takes per node (null: no baseline)"))
    baseline_name: str = Field("Kubespray upgrade-cluster.yml", max_length=80)
    baseline_source: str = Field(KUBESPRAY_UPGRADE_SOURCE, max_length=400)


def _deploy() -> FlowTarget:
    return FlowTarget(target_minutes=10, baseline_minutes=45,
                      baseline_name="Kubespray cluster.yml",
                      baseline_source=KUBESPRAY_DEPLOY_SOURCE)


def _replace() -> FlowTarget:
    # one fresh node (create, boot, install, join) plus the old one's removal; no baseline:
    # Kubespray has no one playbook for it (remove-node.yml, then scale.yml or cluster.yml)
    return FlowTarget(target_minutes=10)


def _recover() -> FlowTarget:
    return FlowTarget(target_minutes=15)


class Targets(Model):
    """Each timed flow against its own target and baseline (`drover report`, the artifacts)."""

    deploy: FlowTarget = Field(default_factory=_deploy)
    upgrade: PerNodeTarget = Field(default_factory=PerNodeTarget)
    replace: FlowTarget = Field(default_factory=_replace)
    recover: FlowTarget = Field(default_factory=_recover)


#: the old keys under spec.deployment and their place under spec.targets.deploy
_DEPLOY_KEYS = (("targetMinutes", "target_minutes"), ("baselineMinutes", "baseline_minutes"))


def _minutes(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def merge_deploy_targets(body: Any) -> Any:
    """The spec body (a mapping, before validation) with the deploy target and baseline in both
    places they may be given, when given in one (a key left out gets the default). The
    caller's mapping is not changed; a value that is not valid stays where it was given, so
    validation reports it once."""
    if not isinstance(body, dict):
        return body
    deployment, targets = body.get("deployment", {}), body.get("targets", {})
    deploy = targets.get("deploy", {}) if isinstance(targets, dict) else None
    if not isinstance(deployment, dict) or not isinstance(deploy, dict):
        return body  # validation names what is wrong with them
    deployment, deploy = dict(deployment), dict(deploy)
    defaults = _deploy()
    for camel, snake in _DEPLOY_KEYS:
        old_key = next((k for k in (camel, snake) if k in deployment), None)
        new_key = next((k for k in (camel, snake) if k in deploy), None)
        if old_key and new_key:
            continue  # given twice: deploy_target_conflicts reports a difference
        value = (deploy[new_key] if new_key else deployment[old_key] if old_key
                 else getattr(defaults, snake))
        if not (_minutes(value) or (value is None and snake == "baseline_minutes")):
            # left where it was given: validation reports it there, once
            value = getattr(defaults, snake) if new_key is None else value
            old_key = old_key or camel
        if old_key is None:
            deployment[camel] = value
        if new_key is None:
            deploy[camel] = value
    for camel, snake in (("baselineName", "baseline_name"),
                         ("baselineSource", "baseline_source")):
        if camel not in deploy and snake not in deploy:
            deploy[camel] = getattr(defaults, snake)
    return {**body, "deployment": deployment, "targets": {**targets, "deploy": deploy}}


def deploy_target_conflicts(deployment: DeploymentSettings,
                            targets: Targets) -> list[tuple[tuple[str, ...], str]]:
    """(path, problem) for each deploy setting given in both places, differently."""
    found = []
    for camel, snake in _DEPLOY_KEYS:
        old, new = getattr(deployment, snake), getattr(targets.deploy, snake)
        if old != new:
            found.append((("deployment", camel), (
                f"{'null' if old is None else f'{old:g}'} differs from spec.targets.deploy.{camel} "
                f"({'null' if new is None else f'{new:g}'}): give the deploy "
                f"{snake.split('_')[0]} once, under spec.targets.deploy")))
    return found
