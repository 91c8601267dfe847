"""Talos machine configuration: the cluster's secrets bundle, per-node rendering and patches.

`load_or_create_secrets` keeps one SecretsBundle per cluster on disk (talosctl's secrets.yaml
layout, 0600); `render_node_config` turns a ClusterSpec node into the v1alpha1 document that
`talosctl gen config` would produce for Talos v1.13 and applies the spec's RFC 7386 merge patches;
`write_rendered` writes every node's config plus a talosconfig, as `drover config render` does.
"""

from drover.machineconfig.patch import apply_patches, merge_patch
from drover.machineconfig.render import (
    hostname_document,
    installer_image,
    render_cluster,
    render_node_config,
    render_node_documents,
    render_node_yaml,
    schematic_body,
    schematic_id,
    schematic_yaml,
    write_rendered,
)
from drover.machineconfig.secrets import (
    CertPair,
    SecretsBundle,
    from_yaml,
    generate_secrets,
    load_certificate,
    load_or_create_secrets,
    load_private_key,
    to_yaml,
    write_kubeconfig,
    write_private,
    write_talosconfig,
)

__all__ = [
    "CertPair",
    "SecretsBundle",
    "apply_patches",
    "from_yaml",
    "generate_secrets",
    "hostname_document",
    "installer_image",
    "load_certificate",
    "load_or_create_secrets",
    "load_private_key",
    "merge_patch",
    "render_cluster",
    "render_node_config",
    "render_node_documents",
    "render_node_yaml",
    "schematic_body",
    "schematic_id",
    "schematic_yaml",
    "to_yaml",
    "write_kubeconfig",
    "write_private",
    "write_rendered",
    "write_talosconfig",
]
