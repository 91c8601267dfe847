"""Rendering a ClusterSpec into Talos v1alpha1 machine configs, as `talosctl gen config` would.

For each declared node this builds what talosctl generates for Talos v1.13 (the version contract
of configs/lab.yaml), then applies the spec's merge patches: `all`, then the node's role. Only
fields present in the official v1.13 schema are emitted, so every output validates against it;
that is why the hostname travels in its own `HostnameConfig` document (Talos v1.12+ generates one
too) rather than in the deprecated `machine.network.hostname`. The installer image comes from the
Image Factory schematic, whose id is derived here offline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from drover.machineconfig.patch import apply_patches
from drover.machineconfig.secrets import (
    SecretsBundle,
    ensure_private_dir,
    write_private,
    write_talosconfig,
)
from drover.spec import ClusterSpec, NodeSpec

KUBELET_IMAGE = "ghcr.io/siderolabs/kubelet"
K8S_REGISTRY = "registry.k8s.io"
KUBEPRISM_PORT = 7445  # constants.DefaultKubePrismPort
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


class _GoYAMLDumper(yaml.SafeDumper):
    """Emit YAML the way Go's gopkg.in/yaml.v3 Marshal does: 4-space indent, indented lists."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def schematic_body(spec: ClusterSpec) -> dict[str, Any]:
    """The Image Factory schematic of the spec, empty parts omitted as the factory omits them."""
    schematic = spec.spec.talos.schematic
    customization: dict[str, Any] = {}
    if schematic.extra_kernel_args:
        customization["extraKernelArgs"] = list(schematic.extra_kernel_args)
    if schematic.extensions:
        customization["systemExtensions"] = {"officialExtensions": list(schematic.extensions)}
    return {"customization": customization}


def schematic_yaml(spec: ClusterSpec) -> str:
    """The schematic as the factory serialises it (field order is part of its stable form)."""
    return yaml.dump(schematic_body(spec), Dumper=_GoYAMLDumper, sort_keys=False, indent=4,
                     width=2**31 - 1)


def schematic_id(spec: ClusterSpec) -> str:
    """Hex sha256 of the canonical schematic YAML: the offline derivation of its factory id.

    The Image Factory defines the id as sha256 of Go's yaml.Marshal of the schematic, so this
    reproduces it for the fields drover sets (the vanilla `customization: {}` gives 376567…b4ba,
    qemu-guest-agent alone gives ce4c9805…7515). The id that `POST /schematics` returns is the
    authoritative one: when they differ (a scalar Go quotes differently, a factory-side change),
    use the factory's and treat this value as a prediction.
    """
    return hashlib.sha256(schematic_yaml(spec).encode()).hexdigest()


def installer_image(spec: ClusterSpec) -> str:
    """`<factory host>/metal-installer/<schematic id>:<talos version>` for machine.install.image."""
    host = urlparse(spec.spec.talos.image_factory).netloc
    return f"{host}/metal-installer/{schematic_id(spec)}:{spec.spec.talos.version}"


def _endpoint_host(spec: ClusterSpec) -> str:
    return urlparse(spec.spec.kubernetes.endpoint).hostname or ""


def _k8s_image(spec: ClusterSpec, name: str) -> str:
    return f"{K8S_REGISTRY}/{name}:{spec.spec.kubernetes.version_tag}"


def _pod_security() -> dict[str, Any]:
    """kube-apiserver's PodSecurity admission config, as Talos generates it."""
    return {
        "name": "PodSecurity",
        "configuration": {
            "apiVersion": "pod-security.admission.config.k8s.io/v1alpha1",
            "defaults": {"audit": "restricted", "audit-version": "latest",
                         "enforce": "baseline", "enforce-version": "latest",
                         "warn": "restricted", "warn-version": "latest"},
            "exemptions": {"namespaces": ["kube-system"], "runtimeClasses": [], "usernames": []},
            "kind": "PodSecurityConfiguration",
        },
    }


def _machine(spec: ClusterSpec, node: NodeSpec, secrets: SecretsBundle) -> dict[str, Any]:
    controlplane = node.role == "controlplane"
    machine: dict[str, Any] = {
        "type": node.role,
        "token": secrets.trustd_token,
        # Workers get the CA certificate only: the key lets a machine mint Talos API certs.
        "ca": {"crt": secrets.os.crt, "key": secrets.os.key if controlplane else ""},
        "certSANs": [_endpoint_host(spec)],
        "kubelet": {
            "image": f"{KUBELET_IMAGE}:{spec.spec.kubernetes.version_tag}",
            "defaultRuntimeSeccompProfileEnabled": True,
            "disableManifestsDirectory": True,
        },
        "install": {
            "disk": spec.spec.talos.install_disk,
            "image": installer_image(spec),
            "wipe": False,
            # gen config sets it from v1.12: kernel args then come from the schematic's UKI,
            # which is what v1.13's upgrade API honours (it drops install.extraKernelArgs).
            "grubUseUKICmdline": True,
        },
        # The v1.13 defaults the schema still lists; rbac, stableHostname and
        # apidCheckExtKeyUsage are implied (and no longer in the schema).
        "features": {
            "diskQuotaSupport": True,
            "kubePrism": {"enabled": True, "port": KUBEPRISM_PORT},
            "hostDNS": {"enabled": True, "forwardKubeDNSToHost": True},
        },
    }
    if controlplane:
        machine["nodeLabels"] = {EXCLUDE_LB_LABEL: ""}
    return machine


def _cluster(spec: ClusterSpec, node: NodeSpec, secrets: SecretsBundle) -> dict[str, Any]:
    kube = spec.spec.kubernetes
    controlplane = node.role == "controlplane"
    cluster: dict[str, Any] = {
        "id": secrets.cluster_id,
        "secret": secrets.cluster_secret,
        "controlPlane": {"endpoint": kube.endpoint},
        "clusterName": spec.name,
        "network": {"dnsDomain": kube.dns_domain, "podSubnets": list(kube.pod_subnets),
                    "serviceSubnets": list(kube.service_subnets)},
        "token": secrets.bootstrap_token,
    }
    if controlplane:
        cluster["secretboxEncryptionSecret"] = secrets.secretbox_encryption_secret
    cluster["ca"] = {"crt": secrets.k8s.crt, "key": secrets.k8s.key if controlplane else ""}
    if controlplane:
        cluster |= {
            "aggregatorCA": {"crt": secrets.k8s_aggregator.crt, "key": secrets.k8s_aggregator.key},
            "serviceAccount": {"key": secrets.k8s_service_account_key},
            "apiServer": {
                "image": _k8s_image(spec, "kube-apiserver"),
                "certSANs": [_endpoint_host(spec)],
                "admissionControl": [_pod_security()],
                "auditPolicy": {"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                "rules": [{"level": "Metadata"}]},
            },
            "controllerManager": {"image": _k8s_image(spec, "kube-controller-manager")},
            "proxy": {"image": _k8s_image(spec, "kube-proxy")},
            "scheduler": {"image": _k8s_image(spec, "kube-scheduler")},
        }
    # Discovery goes to every node: members find each other through the discovery service.
    cluster["discovery"] = {"enabled": True, "registries": {"kubernetes": {"disabled": True},
                                                            "service": {}}}
    if controlplane:
        cluster["etcd"] = {"ca": {"crt": secrets.etcd.crt, "key": secrets.etcd.key}}
    return cluster


def _role_patches(spec: ClusterSpec, role: str) -> list[dict[str, Any]]:
    patches = spec.spec.patches
    named = [("all", patches.all)]
    named.append(("controlPlane", patches.control_plane) if role == "controlplane"
                 else ("worker", patches.worker))
    resolved: list[dict[str, Any]] = []
    for key, items in named:
        for index, item in enumerate(items):
            if isinstance(item, str):
                raise ValueError(
                    f"spec.patches.{key}[{index}] is the file path {item!r}, not a mapping: "
                    "load the spec with drover.spec.load_spec, which inlines patch files")
            resolved.append(item)
    return resolved


def render_node_config(spec: ClusterSpec, node: NodeSpec, secrets: SecretsBundle) -> dict[str, Any]:
    """The node's v1alpha1 machine config document, with the spec's patches applied."""
    doc = {
        "version": "v1alpha1",
        "debug": False,
        "machine": _machine(spec, node, secrets),
        "cluster": _cluster(spec, node, secrets),
    }
    return apply_patches(doc, _role_patches(spec, node.role))


def hostname_document(node: NodeSpec) -> dict[str, Any]:
    """The node's HostnameConfig: a fixed name (with `auto` unset, Talos treats it as off)."""
    return {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": node.name}


def render_node_documents(spec: ClusterSpec, node: NodeSpec,
                          secrets: SecretsBundle) -> list[dict[str, Any]]:
    """Every document of the node's config: the v1alpha1 config, then its HostnameConfig."""
    return [render_node_config(spec, node, secrets), hostname_document(node)]


def render_node_yaml(spec: ClusterSpec, node: NodeSpec, secrets: SecretsBundle) -> str:
    """The node's config as talosctl apply-config takes it: YAML documents separated by ---."""
    return yaml.safe_dump_all(render_node_documents(spec, node, secrets), sort_keys=False)


def render_cluster(spec: ClusterSpec, secrets: SecretsBundle) -> dict[str, str]:
    """Node name -> config YAML for every node the spec declares, control planes first."""
    return {node.name: render_node_yaml(spec, node, secrets) for node in spec.declared_nodes()}


def write_rendered(spec: ClusterSpec, secrets: SecretsBundle, out_dir: Path) -> list[Path]:
    """Write `<node>.yaml` per node and a talosconfig into `out_dir`, all 0600 (they hold keys).

    Node addresses are unknown before provisioning, so the talosconfig points at the
    control-plane endpoint's host and names no nodes; the deploy rewrites it with real addresses.
    """
    out_dir = ensure_private_dir(out_dir)
    paths = [write_private(out_dir / f"{name}.yaml", text)
             for name, text in render_cluster(spec, secrets).items()]
    paths.append(write_talosconfig(out_dir, spec.name, [_endpoint_host(spec)], [], secrets))
    return paths
