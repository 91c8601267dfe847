"""The base of every config model, and the patterns, limits and hints their fields share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

API_VERSION = "drover/v1alpha1"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
VERSION = r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$"
K8S_VERSION = r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$"
#: a cluster name (metadata.name) leaves room for `-<pool>-<n>` in a 63-character node name
CLUSTER_NAME_MAX = 40
POOL_NAME_MAX = 20
NODE_NAME_MAX = 63


PATTERN_HINTS = {
    DNS_LABEL: "must be lowercase letters, digits and '-' (a DNS label, e.g. lab-1)",
    VERSION: "must be a Talos version like v1.13.9",
    K8S_VERSION: "must be a Kubernetes version like 1.36.3",
}


class Model(BaseModel):
    """Base: camelCase in YAML, snake_case in Python, unknown fields rejected, and no silent
    coercion (strict: `count: true` or `retries: "3"` is an error, not 1 or 3)."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True,
        strict=True,
    )
