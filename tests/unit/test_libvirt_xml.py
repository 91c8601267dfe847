"""The libvirt provider's domain XML (the real provider is exercised end to end against
libvirtd and QEMU in tests/system/test_libvirt.py): metadata, disks, boot and network."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from drover.providers.libvirt import NAMESPACE, Libvirt
from drover.spec import parse_spec


@pytest.fixture
def spec_for(make_spec):
    def build(**provider):
        data = make_spec(control_planes=1, workers=1).model_dump(by_alias=True)
        data["spec"]["provider"] = {"kind": "libvirt", "domainType": "qemu",
                                    "hosts": [{"host": "127.0.0.1", "port": 2222}], **provider}
        return parse_spec(data)
    return build


def domain(spec, cidata="/s/lab/lab-cp-1-cidata.iso", **boot) -> ET.Element:
    node = spec.declared_nodes()[0]
    files = {"base": "/s/base/abc-base.qcow2", **boot}
    return ET.fromstring(Libvirt(spec)._domain_xml(node, "/s/lab/lab-cp-1.qcow2", cidata, files))


def test_domain_records_cluster_and_node_in_its_metadata(spec_for):
    root = domain(spec_for())
    meta = root.find(f"metadata/{{{NAMESPACE}}}node")
    assert meta is not None
    assert (meta.get("cluster"), meta.get("node"), meta.get("role"), meta.get("pool")) == (
        "lab", "lab-cp-1", "controlplane", "cp")
    assert root.get("type") == "qemu" and root.findtext("name") == "lab-cp-1"
    assert root.find("memory").text == "4096" and root.findtext("vcpu") == "2"


def test_overlay_and_read_only_cidata_disks_and_a_serial_console_file(spec_for):
    root = domain(spec_for())
    disks = [(d.find("source").get("file"), d.find("target").get("dev"),
              d.find("readonly") is not None) for d in root.iter("disk")]
    assert disks == [("/s/lab/lab-cp-1.qcow2", "vda", False),
                     ("/s/lab/lab-cp-1-cidata.iso", "vdb", True)]
    assert root.find("devices/serial/source").get("path").endswith("lab-cp-1.console.log")


def test_with_config_delivery_by_api_there_is_no_cidata_disk(spec_for):
    root = domain(spec_for(configDelivery="api"), cidata="")
    assert [d.find("target").get("dev") for d in root.iter("disk")] == ["vda"]


@pytest.mark.parametrize("network, kind, source", [
    ("user", "user", None), ("default", "network", "default"), ("br-x", "network", "br-x")])
def test_network_is_qemu_user_mode_or_a_libvirt_network(spec_for, network, kind, source):
    nic = domain(spec_for(network=network)).find("devices/interface")
    assert nic.get("type") == kind
    assert (nic.find("source").get("network") if source else nic.find("source")) == source


def test_direct_kernel_boot_when_a_kernel_is_given(spec_for):
    root = domain(spec_for(cmdline="console=ttyS0 quiet"), kernel="/s/base/k", initrd="/s/base/i")
    assert (root.findtext("os/kernel"), root.findtext("os/initrd"),
            root.findtext("os/cmdline")) == ("/s/base/k", "/s/base/i", "console=ttyS0 quiet")
    assert domain(spec_for()).find("os/kernel") is None


def test_the_domain_carries_the_uuid_drover_chose_so_no_lookup_is_needed(spec_for):
    node = spec_for().declared_nodes()[0]
    xml = Libvirt(spec_for())._domain_xml(node, "/s/d.qcow2", "", {"base": "/s/b"},
                                          "4ff5b9ad-20d6-4ee9-a4cc-2da4ce916d2b")
    assert ET.fromstring(xml).findtext("uuid") == "4ff5b9ad-20d6-4ee9-a4cc-2da4ce916d2b"
