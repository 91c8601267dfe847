"""Talos machine configuration: the cluster's secrets bundle, per-node rendering and patches.

`ensure_secrets` makes one SecretsBundle per cluster before its first deploy and `load_secrets`
reads it ever after (talosctl's secrets.yaml layout, 0600; never regenerated for a cluster
that exists); `render_node_config` turns a ClusterSpec node into the v1alpha1 document that
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
    create_secrets,
    ensure_secrets,
    from_yaml,
    generate_secrets,
    load_certificate,
    load_private_key,
    load_secrets,
    to_yaml,
    write_kubeconfig,
    write_private,
    write_talosconfig,
)

__all__ = [
    "CertPair",
    "SecretsBundle",
    "apply_patches",
    "create_secrets",
    "ensure_secrets",
    "from_yaml",
    "generate_secrets",
    "hostname_document",
    "installer_image",
    "load_certificate",
    "load_private_key",
    "load_secrets",
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
