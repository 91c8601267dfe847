"""The cluster specification: the YAML an SRE writes, validated into a ClusterSpec.

Every model forbids unknown fields and coerces nothing. `load_spec` reports every
problem at once, each as `<file>: <yaml.path>: <message>`, and raises SpecError;
nothing else in drover runs on an invalid spec. It reads YAML through yamlsafe,
keeps patch files inside the config's folder, and checks every patch against the
Talos schema of the target version (`check_patches`); `parse_spec` alone checks
fields and their relations and refuses drover-owned fields in inline patches.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from drover import fields, yamlsafe
from drover.boundaries import confined
from drover.compliance.model import ComplianceSettings
from drover.errors import InvalidName, SpecError
from drover.model import (
    API_VERSION,
    CLUSTER_NAME_MAX,
    DNS_LABEL,
    K8S_VERSION,
    PATTERN_HINTS,
    POOL_NAME_MAX,
    VERSION,
    Model,
)
from drover.provider_settings import (  # noqa: F401 (re-exported)
    LabFault,
    LabProvider,
    ProviderSettings,
)
from drover.spec_settings import (  # noqa: F401 (re-exported)
    DeploymentSettings,
    FlowTarget,
    HealthSettings,
    PerNodeTarget,
    Targets,
    Timeouts,
    UpgradeSettings,
    deploy_target_conflicts,
    merge_deploy_targets,
)
from drover.validation import Located, describe_errors, shown

SUPPORTED_TALOS = fields.SUPPORTED_TALOS
PATCH_KEYS = (("all", "all"), ("control_plane", "controlPlane"), ("worker", "worker"))


class NodeSize(Model):
    cpus: int = Field(2, ge=1, le=256, description="virtual CPUs")
    memory_mib: int = Field(4096, ge=1024, le=4 * 1024 * 1024,
                            description="memory in MiB (Talos needs >= 1024; at most 4 TiB)")
    disk_gib: int = Field(20, ge=10, le=64 * 1024,
                          description="system disk in GiB (Talos needs >= 10; at most 64 TiB)")


class Schematic(Model):
    """What the Talos Image Factory bakes into the boot image and installer."""

    extensions: list[str] = Field(default_factory=list, description="official system extensions")
    extra_kernel_args: list[str] = Field(default_factory=list)


class TalosSettings(Model):
    version: Annotated[str, Field(pattern=VERSION, description="Talos version, e.g. v1.13.9")]
    api: Literal["lab", "talosctl"] = Field(
        "lab", description="how drover reaches the Talos API: the lab's, or talosctl")
    talosctl: str | None = Field(None, description="talosctl path (default: found on PATH)")
    schematic: Schematic = Field(default_factory=Schematic)
    install_disk: str = Field("/dev/vda", description="disk Talos installs to (a device path)")
    image_factory: str = Field("https://factory.talos.dev", description=(
        "Image Factory base URL (https; http only to a loopback address)"))

    @field_validator("version")
    @classmethod
    def _version_is_supported(cls, value: str) -> str:
        return fields.talos_version(value)

    @field_validator("install_disk")
    @classmethod
    def _install_disk_is_a_device(cls, value: str) -> str:
        return fields.install_disk(value)

    @field_validator("image_factory")
    @classmethod
    def _image_factory_is_https(cls, value: str) -> str:
        return fields.image_factory(value)


class KubernetesSettings(Model):
    version: Annotated[str, Field(pattern=K8S_VERSION, description="Kubernetes version")]
    endpoint: str = Field(description="control-plane endpoint, e.g. https://10.5.0.2:6443")
    pod_subnets: list[str] = Field(default_factory=lambda: ["10.244.0.0/16"])
    service_subnets: list[str] = Field(default_factory=lambda: ["10.96.0.0/12"])
    dns_domain: str = "cluster.local"

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_https_url(cls, value: str) -> str:
        return fields.endpoint(value)

    @field_validator("dns_domain")
    @classmethod
    def _dns_domain_is_a_domain(cls, value: str) -> str:
        return fields.dns_domain(value)

    @field_validator("pod_subnets", "service_subnets")
    @classmethod
    def _subnets_are_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ValueError(f"{shown(cidr)} is not a CIDR like 10.244.0.0/16") from None
        return value

    @property
    def version_tag(self) -> str:
        return self.version if self.version.startswith("v") else f"v{self.version}"


class ControlPlane(Model):
    count: int = Field(3, description="control-plane nodes: 1, 3 or 5")
    size: NodeSize = Field(default_factory=NodeSize)

    @field_validator("count")
    @classmethod
    def _count_keeps_quorum(cls, value: int) -> int:
        if value not in (1, 3, 5, 7):
            raise ValueError(f"must be odd (1, 3, 5) to keep etcd quorum, got {value}")
        return value


class WorkerPool(Model):
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=POOL_NAME_MAX)] = "worker"
    count: int = Field(1, ge=0, le=500)
    size: NodeSize = Field(default_factory=NodeSize)


class Patches(Model):
    """Talos machine-config patches (RFC 7386 merge patches): inline mappings or file paths."""

    all: list[dict[str, Any] | str] = Field(default_factory=list)
    control_plane: list[dict[str, Any] | str] = Field(default_factory=list)
    worker: list[dict[str, Any] | str] = Field(default_factory=list)


class ClusterBody(Model):
    talos: TalosSettings
    kubernetes: KubernetesSettings
    control_plane: ControlPlane = Field(default_factory=ControlPlane)
    workers: list[WorkerPool] = Field(default_factory=lambda: [WorkerPool()])
    patches: Patches = Field(default_factory=Patches)
    provider: ProviderSettings
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    upgrade: UpgradeSettings = Field(default_factory=UpgradeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    compliance: ComplianceSettings = Field(default_factory=ComplianceSettings, description=(
        "CIS benchmark, level and justified waivers (drover compliance check)"))
    targets: Targets = Field(default_factory=Targets, description=(
        "each timed flow's own target and baseline (deploy, upgrade per node, replace, recover)"))

    @model_validator(mode="before")
    @classmethod
    def _deploy_target_in_both_places(cls, data: Any) -> Any:
        """spec.deployment.targetMinutes/baselineMinutes (older configs) and
        spec.targets.deploy say the same thing: given in one, both hold it."""
        return merge_deploy_targets(data)

    @model_validator(mode="after")
    def _deploy_target_given_once(self) -> ClusterBody:
        found = deploy_target_conflicts(self.deployment, self.targets)
        if found:
            raise Located(*found)
        return self

    @field_validator("workers")
    @classmethod
    def _pool_names_unique(cls, pools: list[WorkerPool]) -> list[WorkerPool]:
        names = [p.name for p in pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"worker pool names must be unique, repeated: {', '.join(dupes)}")
        if "cp" in names:
            raise ValueError("'cp' is reserved for control-plane nodes; rename that pool")
        return pools

    @model_validator(mode="after")
    def _networks_apart(self) -> ClusterBody:
        """Pod, service and (lab) node networks must not overlap: routes would collide."""
        kube = self.kubernetes
        named = {"podSubnets": list(kube.pod_subnets),
                 "serviceSubnets": list(kube.service_subnets)}
        if isinstance(self.provider, LabProvider):
            named["provider.network"] = [self.provider.network]
        where = {"podSubnets": ("kubernetes", "podSubnets"),
                 "serviceSubnets": ("kubernetes", "serviceSubnets"),
                 "provider.network": ("provider", "network")}
        found = [(where[b], f"{message}: pod, service and node networks must not overlap")
                 for a, b, message in fields.overlaps(named)]
        if found:
            raise Located(*found)
        return self

    @model_validator(mode="after")
    def _patches_leave_owned_fields(self) -> ClusterBody:
        found = [(("patches", alias, index), problem)
                 for alias, index, patch in inline_patches(self.patches)
                 for problem in _owned_problems(patch)]
        if found:
            raise Located(*found)
        return self


class Metadata(Model):
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=CLUSTER_NAME_MAX)]
    site: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] = "default"


class NodeSpec(Model):
    """One declared node: what drover wants to exist."""

    name: str
    role: Literal["controlplane", "worker"]
    pool: str
    size: NodeSize


class Pool(Model):
    name: str
    role: Literal["controlplane", "worker"]
    count: int
    size: NodeSize


def split_node_name(cluster: str, name: str) -> tuple[str, int]:
    """`<cluster>-<pool>-<n>` → (pool, n)."""
    head, _, number = name.rpartition("-")
    if not head.startswith(f"{cluster}-") or not number.isdigit():
        raise ValueError(f"{name}: not a node name of cluster {cluster!r} "
                         f"(expected {cluster}-<pool>-<n>)")
    return head[len(cluster) + 1:], int(number)


class ClusterSpec(Model):
    api_version: Literal["drover/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Cluster"]
    metadata: Metadata
    spec: ClusterBody

    @model_validator(mode="after")
    def _faults_name_nodes_of_this_cluster(self) -> ClusterSpec:
        """A lab fault names `<cluster>-<pool>-<n>` with a declared pool. Any n >= 1 is
        allowed, beyond the pool's count too: replacements and scale-ups get fresh numbers,
        and a fault may be aimed at such a successor."""
        provider = self.spec.provider
        if not isinstance(provider, LabProvider):
            return self
        pools = [p.name for p in self.pools()]
        found = []
        for index, fault in enumerate(provider.faults):
            try:
                pool, number = split_node_name(self.name, fault.node)
            except ValueError:
                pool, number = "", 0
            if pool not in pools or number < 1:
                found.append((("spec", "provider", "faults", index, "node"),
                              f"{shown(fault.node)} is not a node of this cluster: expected "
                              f"{self.name}-<pool>-<n> with a pool of {', '.join(pools)} and "
                              "n >= 1"))
        if found:
            raise Located(*found)
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    def pools(self) -> list[Pool]:
        """The node pools: control planes (pool 'cp') first, then each worker pool."""
        body = self.spec
        return [Pool(name="cp", role="controlplane", count=body.control_plane.count,
                     size=body.control_plane.size),
                *(Pool(name=p.name, role="worker", count=p.count, size=p.size)
                  for p in body.workers)]

    def node(self, pool: str, index: int) -> NodeSpec:
        """The node of `pool` numbered `index`: `<cluster>-<pool>-<index>`."""
        found = next((p for p in self.pools() if p.name == pool), None)
        if found is None:
            raise KeyError(f"{self.name}: no node pool {pool!r}")
        return NodeSpec(name=f"{self.name}-{pool}-{index}", role=found.role, pool=pool,
                        size=found.size)

    def node_named(self, name: str) -> NodeSpec:
        """The NodeSpec of an existing node, from its name."""
        pool, index = split_node_name(self.name, name)
        return self.node(pool, index)

    @property
    def node_count(self) -> int:
        return sum(p.count for p in self.pools())

    def declared_nodes(self) -> list[NodeSpec]:
        """The nodes a fresh deploy creates: `<cluster>-<pool>-1..count`, control planes first.

        Replacements get fresh numbers, so a cluster may later hold other names.
        """
        return [self.node(p.name, i) for p in self.pools() for i in range(1, p.count + 1)]

    def with_overrides(self, talos_version: str | None = None,
                       kubernetes_version: str | None = None) -> ClusterSpec:
        """A copy with versions overridden (UI and CLI parameters), re-validated; this spec
        itself when nothing changes (the patches were checked when it was made)."""
        if talos_version in (None, "", self.spec.talos.version) and \
                kubernetes_version in (None, "", self.spec.kubernetes.version):
            return self
        data = self.model_dump(by_alias=True)
        if talos_version:
            data["spec"]["talos"]["version"] = talos_version
        if kubernetes_version:
            data["spec"]["kubernetes"]["version"] = kubernetes_version
        return check_patches(parse_spec(data, source="overrides"), source="overrides")


def inline_patches(patches: Patches) -> list[tuple[str, int, dict[str, Any]]]:
    """(YAML key, index, patch) for every patch given as a mapping (not as a file path)."""
    return [(alias, index, item) for key, alias in PATCH_KEYS
            for index, item in enumerate(getattr(patches, key)) if isinstance(item, dict)]


def _owned_problems(patch: dict[str, Any]) -> list[str]:
    # Imported here: drover.machineconfig imports this module (its renderer takes a ClusterSpec).
    from drover.machineconfig.schema import owned_problems

    return owned_problems(patch)


def check_patches(spec: ClusterSpec, source: str = "<config>") -> ClusterSpec:
    """`spec` if every inline patch passes the official Talos schema of its version and leaves
    drover-owned fields alone; else SpecError with `spec.patches.<key>[i]: <config path>: ...`."""
    from drover.machineconfig.schema import patch_problems  # see _owned_problems

    version = spec.spec.talos.version
    problems = [f"spec.patches.{alias}[{index}]: {problem}"
                for alias, index, patch in inline_patches(spec.spec.patches)
                for problem in patch_problems(patch, version)]
    if problems:
        raise SpecError(source, problems)
    return spec


def parse_spec(data: Any, source: str = "<config>") -> ClusterSpec:
    """Validate already-parsed YAML; raise SpecError listing every problem. Patches are not
    checked against the Talos schema here (load_spec and with_overrides do: check_patches)."""
    if not isinstance(data, dict):
        raise SpecError(source, ["(top level): must be a mapping with apiVersion, kind, "
                                 "metadata and spec"])
    if data.get("apiVersion") not in (None, API_VERSION):
        raise SpecError(source, [f"apiVersion: must be {API_VERSION}, "
                                 f"got {shown(data.get('apiVersion'))}"])
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, describe_errors(exc, ClusterSpec, PATTERN_HINTS)) from None


def load_spec(path: str | Path) -> ClusterSpec:
    """Read and validate a cluster YAML file: patch files (relative to its folder, and inside
    it) are inlined, then every patch is checked against the Talos schema."""
    path = Path(path)
    spec = parse_spec(yamlsafe.load_file(path), source=str(path))
    return check_patches(_resolve_patch_files(spec, path), source=str(path))


def _load_patch_file(item: str, base: Path, where: str) -> tuple[dict[str, Any] | None, list[str]]:
    """One patch file named in the config: (its mapping, []) or (None, problems)."""
    named = f"{where}: patch file {shown(item)}"
    if Path(item).is_absolute():
        return None, [f"{named}: an absolute path is not allowed; give a path relative to the "
                      f"config's folder {base}"]
    try:
        file = confined(base / item, base, "patch file")
    except InvalidName:
        return None, [f"{named} is outside the config's folder {base}: patch files must sit "
                      "in that folder (no '..' escape, no symlink leading out)"]
    try:
        loaded = yamlsafe.load_file(file, source=item)
    except SpecError as exc:
        return None, [f"{named}: {issue}" for issue in exc.issues]
    if not isinstance(loaded, dict):
        return None, [f"{named} must hold one mapping (a merge patch of the v1alpha1 config)"]
    return loaded, []


def _resolve_patch_files(spec: ClusterSpec, config: Path) -> ClusterSpec:
    """Inline patch files so the spec is self-contained (a Prefect parameter, a worker)."""
    base = config.parent.resolve()
    problems: list[str] = []
    resolved: dict[str, list[dict[str, Any]]] = {}
    for key, alias in PATCH_KEYS:
        out = []
        for i, item in enumerate(getattr(spec.spec.patches, key)):
            if isinstance(item, dict):
                out.append(item)
                continue
            loaded, found = _load_patch_file(item, base, f"spec.patches.{alias}[{i}]")
            problems += found
            if loaded is not None:
                out.append(loaded)
        resolved[key] = out
    if problems:
        raise SpecError(str(config), problems)
    patches = Patches(**resolved)
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"patches": patches})})


def json_schema() -> dict[str, Any]:
    """JSON Schema of the cluster YAML, for editors (`drover schema`)."""
    schema = ClusterSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "drover Cluster"
    return schema
