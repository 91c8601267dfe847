"""drover.machineconfig: rendered configs against Talos's own schema, patches, secrets on disk."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from drover.errors import SecretsMissing, StateError
from drover.machineconfig import (
    SecretsBundle,
    apply_patches,
    create_secrets,
    ensure_secrets,
    from_yaml,
    generate_secrets,
    installer_image,
    load_certificate,
    load_private_key,
    load_secrets,
    merge_patch,
    render_node_config,
    render_node_documents,
    schematic_id,
    to_yaml,
    write_kubeconfig,
    write_private,
    write_rendered,
    write_talosconfig,
)
from drover.machineconfig.schema import load_schema
from drover.spec import ClusterSpec, NodeSpec, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "talos" / "config.schema.v1.13.json"
VANILLA_ID = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
QEMU_AGENT_ID = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    """The official schema from shared/ beside the repository; else the copy drover ships
    (drover/machineconfig/schemas/, the same file gzipped), which must then match it."""
    packaged = load_schema("v1.13")
    if SCHEMA.is_file():
        assert json.loads(SCHEMA.read_text()) == packaged, "the packaged schema went stale"
    return Draft202012Validator(packaged)


@pytest.fixture(scope="module")
def bundle() -> SecretsBundle:
    return generate_secrets()


@pytest.fixture(scope="module")
def lab() -> ClusterSpec:
    return load_spec(REPO / "configs" / "lab.yaml")


def make_spec(name: str = "pools", **body: Any) -> ClusterSpec:
    data = {
        "apiVersion": "drover/v1alpha1", "kind": "Cluster", "metadata": {"name": name},
        "spec": {"talos": {"version": "v1.13.9"},
                 "kubernetes": {"version": "1.36.3", "endpoint": "https://10.0.0.10:6443"},
                 "provider": {"kind": "lab"}, **body},
    }
    return parse_spec(data, source="test")


def node(spec: ClusterSpec, name: str) -> NodeSpec:
    return next(n for n in spec.declared_nodes() if n.name == name)


def schema_errors(validator: Draft202012Validator, spec: ClusterSpec,
                  bundle: SecretsBundle) -> list[str]:
    """One line per invalid document; best_match digs the real cause out of the kinds' oneOf."""
    errors = []
    for n in spec.declared_nodes():
        for doc in render_node_documents(spec, n, bundle):
            error = best_match(validator.iter_errors(doc))
            if error is not None:
                errors.append(f"{n.name} {doc.get('kind', 'v1alpha1')}: {error.json_path}: "
                              f"{error.message[:300]}")
    return errors


# --- rendering against the official schema ---------------------------------------------------

def test_rendered_configs_validate_against_the_official_schema(validator, lab, bundle):
    assert [n.name for n in lab.declared_nodes()] == [
        "lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-worker-1", "lab-worker-2"]
    assert schema_errors(validator, lab, bundle) == []


def test_config_with_worker_pools_and_patches_validates_against_the_official_schema(
        validator, bundle):
    spec = make_spec(
        controlPlane={"count": 1},
        workers=[{"name": "small", "count": 2}, {"name": "gpu", "count": 1}],
        patches={"all": [{"machine": {"kubelet": {"extraArgs": {"max-pods": "150"}}}}],
                 "controlPlane": [
                     {"cluster": {"etcd": {"extraArgs": {"election-timeout": "5000"}}}}],
                 "worker": [{"machine": {"nodeLabels": {"pool": "any"}}}]},
    )
    assert len(spec.declared_nodes()) == 4
    assert schema_errors(validator, spec, bundle) == []


def test_schema_check_rejects_a_field_the_v1_13_schema_dropped(validator, bundle):
    spec = make_spec(patches={"all": [{"machine": {"network": {"hostname": "x"}}}]})
    errors = schema_errors(validator, spec, bundle)
    assert errors and all("'network' was unexpected" in e for e in errors)


def test_node_gets_its_name_as_hostname_and_the_factory_installer(lab, bundle):
    docs = render_node_documents(lab, node(lab, "lab-worker-2"), bundle)
    assert docs[1] == {"apiVersion": "v1alpha1", "kind": "HostnameConfig",
                       "hostname": "lab-worker-2"}
    install = docs[0]["machine"]["install"]
    assert install["disk"] == "/dev/vda" and install["wipe"] is False
    assert install["image"] == installer_image(lab)
    assert install["image"] == f"factory.talos.dev/metal-installer/{schematic_id(lab)}:v1.13.9"


def test_control_plane_config_carries_the_cluster_pki_and_images(lab, bundle):
    doc = render_node_config(lab, node(lab, "lab-cp-1"), bundle)
    machine, cluster = doc["machine"], doc["cluster"]
    assert machine["type"] == "controlplane" and machine["token"] == bundle.trustd_token
    assert machine["ca"] == {"crt": bundle.os.crt, "key": bundle.os.key}
    assert machine["certSANs"] == ["10.5.0.2"]
    assert machine["kubelet"]["image"] == "ghcr.io/siderolabs/kubelet:v1.36.3"
    assert cluster["token"] == bundle.bootstrap_token
    assert cluster["controlPlane"] == {"endpoint": "https://10.5.0.2:6443"}
    assert cluster["etcd"]["ca"] == {"crt": bundle.etcd.crt, "key": bundle.etcd.key}
    assert cluster["serviceAccount"] == {"key": bundle.k8s_service_account_key}
    assert cluster["apiServer"]["image"] == "registry.k8s.io/kube-apiserver:v1.36.3"
    assert cluster["proxy"]["image"] == "registry.k8s.io/kube-proxy:v1.36.3"


def test_workers_get_no_ca_keys(lab, bundle):
    doc = render_node_config(lab, node(lab, "lab-worker-1"), bundle)
    assert doc["machine"]["ca"] == {"crt": bundle.os.crt, "key": ""}
    assert doc["cluster"]["ca"] == {"crt": bundle.k8s.crt, "key": ""}
    leaked = {"aggregatorCA", "serviceAccount", "secretboxEncryptionSecret", "etcd"}
    assert leaked.isdisjoint(doc["cluster"])
    text = yaml.safe_dump(doc)
    for secret_key in (bundle.os.key, bundle.k8s.key, bundle.etcd.key,
                       bundle.k8s_aggregator.key, bundle.k8s_service_account_key):
        assert secret_key not in text


# --- patches ---------------------------------------------------------------------------------

def test_all_patch_lands_on_every_node_and_role_patch_only_on_its_role(lab, bundle):
    for n in lab.declared_nodes():
        doc = render_node_config(lab, n, bundle)
        assert doc["machine"]["sysctls"] == {"vm.max_map_count": "262144"}
        expected = False if n.role == "controlplane" else None
        assert doc["cluster"].get("allowSchedulingOnControlPlanes") == expected


def test_null_in_a_patch_removes_the_key(bundle):
    spec = make_spec(patches={"worker": [{"machine": {"features": {"hostDNS": None}}}]})
    worker = render_node_config(spec, node(spec, "pools-worker-1"), bundle)
    control_plane = render_node_config(spec, node(spec, "pools-cp-1"), bundle)
    assert "hostDNS" not in worker["machine"]["features"]
    assert "kubePrism" in worker["machine"]["features"]
    assert "hostDNS" in control_plane["machine"]["features"]


def test_role_patch_applies_after_the_all_patch(bundle):
    spec = make_spec(patches={"all": [{"machine": {"nodeLabels": {"tier": "all"}}}],
                              "worker": [{"machine": {"nodeLabels": {"tier": "worker"}}}]})
    worker = render_node_config(spec, node(spec, "pools-worker-1"), bundle)
    assert worker["machine"]["nodeLabels"] == {"tier": "worker"}


def test_unresolved_patch_file_raises_a_clear_error(bundle):
    spec = make_spec(patches={"all": ["patches/time.yaml"]})
    with pytest.raises(ValueError, match=r"spec\.patches\.all\[0\].*load_spec"):
        render_node_config(spec, node(spec, "pools-cp-1"), bundle)


# RFC 7386 Appendix A, every row.
RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386_EXAMPLES)
def test_merge_patch_follows_rfc7386_appendix_a(target, patch, result):
    assert merge_patch(target, patch) == result


def test_merge_patch_does_not_mutate_or_share_its_inputs():
    target = {"a": {"b": [1]}, "keep": {"x": 1}}
    patch = {"a": {"c": [2]}, "keep": None}
    result = merge_patch(target, patch)
    assert target == {"a": {"b": [1]}, "keep": {"x": 1}}
    assert patch == {"a": {"c": [2]}, "keep": None}
    result["a"]["b"].append(9)
    result["a"]["c"].append(9)
    assert target["a"]["b"] == [1] and patch["a"]["c"] == [2]


def test_apply_patches_applies_in_order_and_rejects_non_mappings():
    assert apply_patches({"a": 1}, [{"a": 2, "b": 1}, {"b": None}]) == {"a": 2}
    with pytest.raises(ValueError, match="patch 0 must be a mapping"):
        apply_patches({"a": 1}, [["not", "a", "mapping"]])  # type: ignore[list-item]


# --- schematic -------------------------------------------------------------------------------

def test_schematic_id_of_an_empty_schematic_is_the_vanilla_id():
    assert schematic_id(make_spec()) == VANILLA_ID


def test_schematic_id_matches_the_factory_for_qemu_guest_agent():
    spec = make_spec(talos={"version": "v1.13.9",
                            "schematic": {"extensions": ["siderolabs/qemu-guest-agent"]}})
    assert schematic_id(spec) == QEMU_AGENT_ID


# --- secrets ---------------------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_written_private_and_reload_as_the_same_bundle(tmp_path):
    cluster_dir = tmp_path / "clusters" / "lab"
    created = ensure_secrets(cluster_dir, nodes_exist=False)
    assert mode(cluster_dir) == 0o700
    assert mode(cluster_dir / "secrets.yaml") == 0o600
    assert ensure_secrets(cluster_dir, nodes_exist=True) == created
    assert load_secrets(cluster_dir) == created
    assert [p.name for p in cluster_dir.iterdir()] == ["secrets.yaml"]  # no temp file left


def test_create_secrets_returns_the_bundle_another_run_saved_first(tmp_path, bundle):
    write_private(tmp_path / "secrets.yaml", to_yaml(bundle))
    assert create_secrets(tmp_path) == bundle


@pytest.mark.parametrize("nodes_exist, trace", [(True, None), (False, "cluster.json"),
                                                (False, "talosconfig"), (False, "kubeconfig")])
def test_secrets_are_never_made_again_for_a_cluster_that_exists(tmp_path, nodes_exist, trace):
    folder = tmp_path / "lab"
    folder.mkdir(mode=0o700)
    if trace:
        write_private(folder / trace, "{}")
    with pytest.raises(SecretsMissing, match=r"secrets.yaml: missing.*drover secrets restore lab "
                                             r"BACKUP.*own copy"):
        ensure_secrets(folder, nodes_exist)
    assert not (folder / "secrets.yaml").exists()


def test_load_secrets_of_a_missing_file_says_what_to_restore(tmp_path):
    with pytest.raises(SecretsMissing, match=r"lab/secrets.yaml: missing.*new CAs.*"
                                             r"drover secrets restore lab BACKUP"):
        load_secrets(tmp_path / "lab")


@pytest.mark.parametrize("file_mode, folder_mode, fix", [
    (0o644, 0o700, "chmod 600"), (0o640, 0o700, "chmod 600"), (0o600, 0o755, "chmod 700")])
def test_secrets_open_to_others_are_refused_with_the_chmod_fix(tmp_path, bundle, file_mode,
                                                                 folder_mode, fix):
    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "secrets.yaml").write_text(to_yaml(bundle))
    (folder / "secrets.yaml").chmod(file_mode)
    folder.chmod(folder_mode)
    with pytest.raises(StateError, match=f"lets other users in.*{fix}"):
        load_secrets(folder)
    with pytest.raises(StateError, match=fix):
        ensure_secrets(folder, nodes_exist=False)


def test_damaged_secrets_are_named_and_never_quoted(tmp_path, bundle):
    folder = tmp_path / "lab"
    folder.mkdir(mode=0o700)
    key = bundle.os.key
    write_private(folder / "secrets.yaml", f"cluster: [{key}\n")
    with pytest.raises(StateError) as caught:
        load_secrets(folder)
    assert str(folder / "secrets.yaml") in str(caught.value)
    assert "damaged" in str(caught.value) and key not in str(caught.value)


def test_a_talosconfig_open_to_others_is_refused_not_reused(tmp_path, bundle):
    path = write_talosconfig(tmp_path, "lab", ["a"], [], bundle)
    path.chmod(0o644)
    with pytest.raises(StateError, match="talosconfig: mode 0644"):
        write_talosconfig(tmp_path, "lab", ["a"], [], bundle)


def test_secrets_yaml_uses_the_talosctl_layout(bundle):
    data = yaml.safe_load(to_yaml(bundle))
    assert set(data) == {"cluster", "secrets", "trustdinfo", "certs"}
    assert set(data["cluster"]) == {"id", "secret"}
    assert set(data["secrets"]) == {"bootstraptoken", "secretboxencryptionsecret"}
    assert set(data["certs"]) == {"etcd", "k8s", "k8saggregator", "os", "k8sserviceaccount"}
    assert from_yaml(to_yaml(bundle)) == bundle


def test_from_yaml_names_every_missing_key(bundle):
    data = yaml.safe_load(to_yaml(bundle))
    del data["trustdinfo"], data["certs"]["os"]["key"]
    with pytest.raises(ValueError) as raised:
        from_yaml(yaml.safe_dump(data))
    assert "trustdinfo.token" in str(raised.value) and "certs.os.key" in str(raised.value)


def test_repr_reveals_no_secret_value(bundle):
    shown = repr(bundle) + str(bundle) + f"{bundle}" + repr(bundle.os)
    values = [bundle.cluster_id, bundle.cluster_secret, bundle.bootstrap_token,
              bundle.secretbox_encryption_secret, bundle.trustd_token,
              bundle.k8s_service_account_key, bundle.os.key, bundle.os.crt]
    assert all(v not in shown and v[:12] not in shown for v in values)


def test_tokens_and_random_secrets_have_the_talos_formats(bundle):
    assert TOKEN.match(bundle.bootstrap_token) and TOKEN.match(bundle.trustd_token)
    assert len(base64.urlsafe_b64decode(bundle.cluster_id)) == 32
    for value in (bundle.cluster_secret, bundle.secretbox_encryption_secret):
        assert len(base64.b64decode(value, validate=True)) == 32


@pytest.mark.parametrize(("name", "key_type"), [
    ("os", ed25519.Ed25519PrivateKey), ("k8s", ec.EllipticCurvePrivateKey),
    ("k8s_aggregator", ec.EllipticCurvePrivateKey), ("etcd", ec.EllipticCurvePrivateKey)])
def test_ca_certificates_are_ten_year_cas_of_the_talos_key_type(bundle, name, key_type):
    pair = getattr(bundle, name)
    cert, key = load_certificate(pair.crt), load_private_key(pair.key)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=87600)
    assert isinstance(key, key_type)
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(cert)  # self-signed


def test_os_ca_key_uses_the_talos_pem_label_and_service_account_is_rsa(bundle):
    assert base64.b64decode(bundle.os.key).startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    assert isinstance(load_private_key(bundle.k8s_service_account_key), rsa.RSAPrivateKey)


def test_talosconfig_client_cert_verifies_against_the_os_ca(tmp_path, bundle):
    path = write_talosconfig(tmp_path / "lab", "lab", ["10.5.0.2"], ["10.5.0.3"], bundle)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    config = yaml.safe_load(path.read_text())
    context = config["contexts"]["lab"]
    assert config["context"] == "lab" and context["ca"] == bundle.os.crt
    assert (context["endpoints"], context["nodes"]) == (["10.5.0.2"], ["10.5.0.3"])
    cert = load_certificate(context["crt"])
    cert.verify_directly_issued_by(load_certificate(bundle.os.crt))
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "os:admin"
    assert isinstance(load_private_key(context["key"]), ed25519.Ed25519PrivateKey)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=365)


def test_talosconfig_rerun_rewrites_endpoints_and_keeps_the_client_cert(tmp_path, bundle):
    first = yaml.safe_load(write_talosconfig(tmp_path, "lab", ["a"], [], bundle).read_text())
    second = yaml.safe_load(write_talosconfig(tmp_path, "lab", ["b"], ["n"], bundle).read_text())
    assert second["contexts"]["lab"]["endpoints"] == ["b"]
    assert second["contexts"]["lab"]["nodes"] == ["n"]
    assert second["contexts"]["lab"]["crt"] == first["contexts"]["lab"]["crt"]


def test_kubeconfig_client_cert_verifies_against_the_k8s_ca(tmp_path, bundle):
    path = write_kubeconfig(tmp_path, "lab", "https://10.5.0.2:6443", bundle)
    assert mode(path) == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://10.5.0.2:6443"
    user = config["users"][0]["user"]
    cert = load_certificate(user["client-certificate-data"])
    cert.verify_directly_issued_by(load_certificate(bundle.k8s.crt))
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "system:masters"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert cert.public_key() == load_private_key(user["client-key-data"]).public_key()


def test_write_private_replaces_a_world_readable_file_with_a_private_one(tmp_path):
    path = tmp_path / "secret"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_exclusive_write_private_keeps_the_file_that_won(tmp_path):
    path = write_private(tmp_path / "secrets.yaml", "first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_private(path, "second", exclusive=True)
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["secrets.yaml"]


def test_write_rendered_writes_every_node_and_a_talosconfig_privately(tmp_path, lab, bundle):
    out = tmp_path / "rendered"
    paths = write_rendered(lab, bundle, out)
    assert sorted(p.name for p in paths) == sorted(
        [f"{n.name}.yaml" for n in lab.declared_nodes()] + ["talosconfig"])
    assert mode(out) == 0o700 and all(mode(p) == 0o600 for p in paths)
    docs = list(yaml.safe_load_all((out / "lab-cp-2.yaml").read_text()))
    assert docs[0]["machine"]["type"] == "controlplane"
    assert docs[1]["hostname"] == "lab-cp-2"
