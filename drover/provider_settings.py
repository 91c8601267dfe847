"""Provider settings in the cluster YAML (`spec.provider`), one model per backend,
picked by `kind`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from drover.fields import lab_network
from drover.model import DNS_LABEL, NODE_NAME_MAX, Model


class LabFault(Model):
    """A fault the lab injects, declared in the config."""

    type: Literal["create-fails", "never-boots", "slow-boot", "talos-api-errors", "dies",
                  "upgrade-fails", "drain-blocked"]
    node: Annotated[str, Field(pattern=DNS_LABEL, max_length=NODE_NAME_MAX, description=(
        "the node's name, <cluster>-<pool>-<n> with a declared pool, e.g. lab-cp-2; n may be "
        "beyond the pool's count (replacements and scale-ups get fresh numbers)"))]
    times: int = Field(1, ge=1, description=(
        "create-fails, talos-api-errors, upgrade-fails: how many times it happens"))
    after_seconds: float = Field(0, ge=0, description=(
        "dies: seconds after the node reaches running; slow-boot: extra seconds of boot"))


class LabProvider(Model):
    kind: Literal["lab"]
    profile: Literal["instant", "demo", "realistic"] = "demo"
    compression: float = Field(
        1.0, ge=1.0, description="realistic: divide real-world durations by this factor"
    )
    clock: Literal["system", "virtual"] = Field(
        "system", description="virtual: time advances only when drover waits (tests)"
    )
    network: str = Field("10.5.0.0/24", description=(
        "emulated node network (no traffic is sent); at most an IPv4 /16 or an IPv6 /112, "
        "since the lab assigns node addresses from it"))
    seed: int | None = Field(None, description="seed for duration jitter; random if unset")
    faults: list[LabFault] = Field(default_factory=list)

    @field_validator("network")
    @classmethod
    def _network_is_cidr(cls, value: str) -> str:
        return lab_network(value)


class SshTarget(Model):
    """A hypervisor host drover reaches over SSH (key authentication, host key verified)."""

    host: str = Field(description="address or DNS name")
    port: int = Field(22, ge=1, le=65535)
    user: str = "root"
    key_file: str | None = Field(None, description="private key file; else the SSH agent")
    key_secret_block: str | None = Field(
        None, description="name of a Prefect Secret block holding the private key")
    known_hosts: str = Field("~/.ssh/known_hosts", description=(
        "known_hosts file the host key must be in; an unknown key is an error"))

    @field_validator("key_secret_block")
    @classmethod
    def _one_key_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("key_file"):
            raise ValueError("set keyFile or keySecretBlock, not both")
        return value


class LibvirtProvider(Model):
    kind: Literal["libvirt"]
    hosts: list[SshTarget] = Field(min_length=1, description="KVM hosts; nodes are spread")
    uri: str = Field("qemu:///system", description="libvirt URI on each host")
    domain_type: Literal["kvm", "qemu"] = Field(
        "kvm", description="qemu: software emulation, where KVM is not available")
    storage_dir: str = Field("/var/lib/libvirt/images/drover",
                             description="where boot images and node overlays live on a host")
    network: str = Field("default", description="libvirt network, or 'user' (QEMU user mode)")
    config_delivery: Literal["cidata", "api"] = Field(
        "cidata", description="machine config on a cidata ISO (nocloud), or pushed by API")
    boot_image: str | None = Field(None, description=(
        "local boot disk image (qcow2) uploaded to each host; node disks are overlays on it"))
    kernel: str | None = Field(None, description="local kernel for direct kernel boot")
    initrd: str | None = Field(None, description="local initramfs for direct kernel boot")
    cmdline: str = Field("console=ttyS0", description="kernel command line (direct boot)")
    boot_image_sha256: str | None = Field(None, description=(
        "sha256 the boot disk must have (bootImage, or the Image Factory download); unset: "
        "a download is trusted on first use and a later different one refused"))
    kernel_sha256: str | None = Field(None, description="sha256 the kernel file must have")
    initrd_sha256: str | None = Field(None, description="sha256 the initrd file must have")
    address_timeout_seconds: float = Field(300, gt=0)

    @field_validator("boot_image_sha256", "kernel_sha256", "initrd_sha256")
    @classmethod
    def _is_sha256(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be a sha256: 64 hexadecimal digits (sha256sum FILE)")
        return value.lower() if value else value


class ProxmoxProvider(Model):
    kind: Literal["proxmox"]
    url: str = Field(description="API base, e.g. https://pve1.example:8006")
    nodes: list[str] = Field(min_length=1, description="Proxmox nodes VMs are spread over")
    token_id: str = Field(description="API token id, user@realm!name")
    token_secret_env: str = Field("PROXMOX_TOKEN_SECRET",
                                  description="environment variable holding the token secret")
    token_secret_block: str | None = Field(
        None, description="or a Prefect Secret block holding it")
    ca_file: str | None = Field(None, description="CA bundle for a private PKI (TLS verified)")
    template_vmid: int | None = Field(None, description="clone this template; else create")
    storage: str = "local-lvm"
    pool: str | None = None
    bridge: str = "vmbr0"
    max_parallel_clones: int = Field(4, ge=1, description="clones running at once")


ProviderSettings = Annotated[LabProvider | LibvirtProvider | ProxmoxProvider,
                             Field(discriminator="kind")]
