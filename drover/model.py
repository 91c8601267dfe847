"""The base of every config model, and the patterns and hints their fields share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

API_VERSION = "drover/v1alpha1"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
VERSION = r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$"
K8S_VERSION = r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$"


PATTERN_HINTS = {
    DNS_LABEL: "must be lowercase letters, digits and '-' (a DNS label, e.g. lab-1)",
    VERSION: "must be a Talos version like v1.13.9",
    K8S_VERSION: "must be a Kubernetes version like 1.36.3",
}


class Model(BaseModel):
    """Base: camelCase in YAML, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


