"""The cluster's secrets bundle (what `talosctl gen secrets` makes) and the files that hold secrets.

A SecretsBundle is generated once per cluster, stored as `<cluster_dir>/secrets.yaml` in
talosctl's layout (so `talosctl gen config --with-secrets` reads it too), and never printed: its
repr is redacted. It is never made again for a cluster that exists (`ensure_secrets` creates it
only before the first deploy; `load_secrets` refuses a missing, too-open or damaged file).
Key types follow Talos v1.13: ed25519 for the Talos API CA, ECDSA P-256 for the Kubernetes,
aggregator and etcd CAs, RSA 4096 for the service-account key. Every file written here goes
through `write_private` (0600 from creation, atomic rename) because each one holds a key.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets as rand
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from drover.errors import SecretsMissing, StateError
from drover.files import write_private
from drover.statefile import check_private, private_dir, read_private

CA_VALIDITY = dt.timedelta(hours=87600)  # Talos CAValidityTime
CLIENT_VALIDITY = dt.timedelta(days=365)  # talosctl and admin kubeconfig default
RENEW_BEFORE = dt.timedelta(days=30)  # reissue a kept client cert this close to expiry
TOKEN_CHARS = string.ascii_lowercase + string.digits
ED25519_LABEL = "ED25519 PRIVATE KEY"  # Talos's PEM label for PKCS#8 ed25519 keys

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, repr=False)
class CertPair:
    """A certificate and its key, each a base64-encoded PEM string (as in Talos configs)."""

    crt: str
    key: str

    def __repr__(self) -> str:
        return "CertPair(<redacted>)"


@dataclass(frozen=True, repr=False)
class SecretsBundle:
    """Every secret of one cluster; the repr never shows a value."""

    cluster_id: str
    cluster_secret: str
    bootstrap_token: str
    secretbox_encryption_secret: str
    trustd_token: str
    os: CertPair
    k8s: CertPair
    k8s_aggregator: CertPair
    etcd: CertPair
    k8s_service_account_key: str

    def __repr__(self) -> str:
        return "SecretsBundle(<redacted>)"

    __str__ = __repr__


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _token() -> str:
    """A kubeadm-style token, `[a-z0-9]{6}.[a-z0-9]{16}`, as Talos's genToken(6, 16)."""
    part1, part2 = ("".join(rand.choice(TOKEN_CHARS) for _ in range(n)) for n in (6, 16))
    return f"{part1}.{part2}"


def _key_pem(key: PrivateKey) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        # PKCS#8 under Talos's own label (cryptography would write plain "PRIVATE KEY").
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return pem.replace(b"PRIVATE KEY", ED25519_LABEL.encode())
    # EC and RSA keys in the traditional (SEC1 / PKCS#1) form, as siderolabs/crypto writes them.
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def load_private_key(b64_pem: str) -> PrivateKey:
    """Decode a base64 PEM key as Talos stores it, including its ED25519 PRIVATE KEY label."""
    pem = base64.b64decode(b64_pem).replace(ED25519_LABEL.encode(), b"PRIVATE KEY")
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey,
                            rsa.RSAPrivateKey)):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def load_certificate(b64_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64_pem))


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    # ed25519 signs without a separate digest; the others use SHA-256 like Go's x509.
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _pair(cert: x509.Certificate, key: PrivateKey) -> CertPair:
    crt = cert.public_bytes(serialization.Encoding.PEM)
    return CertPair(crt=_b64(crt), key=_b64(_key_pem(key)))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         crl_sign=False, encipher_only=False, decipher_only=False)


def _new_ca(subject: x509.Name, key: PrivateKey, now: dt.datetime) -> CertPair:
    """A self-signed CA shaped like siderolabs/crypto's NewSelfSignedCertificateAuthority."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    return _pair(_sign(builder, key), key)


def _p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _org(*names: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, n) for n in names])


def generate_secrets(now: dt.datetime | None = None) -> SecretsBundle:
    """A fresh bundle, as `talosctl gen secrets` makes for Talos v1.13."""
    now = now or _now()
    service_account = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return SecretsBundle(
        # Talos encodes the cluster id URL-safe and the secret with the standard alphabet.
        cluster_id=base64.urlsafe_b64encode(rand.token_bytes(32)).decode(),
        cluster_secret=_b64(rand.token_bytes(32)),
        bootstrap_token=_token(),
        secretbox_encryption_secret=_b64(rand.token_bytes(32)),
        trustd_token=_token(),
        os=_new_ca(_org("talos"), ed25519.Ed25519PrivateKey.generate(), now),
        k8s=_new_ca(_org("kubernetes"), _p256(), now),
        k8s_aggregator=_new_ca(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "front-proxy")]),
                               _p256(), now),
        etcd=_new_ca(_org("etcd"), _p256(), now),
        k8s_service_account_key=_b64(_key_pem(service_account)),
    )


CERT_NAMES = (("etcd", "etcd"), ("k8s", "k8s"), ("k8saggregator", "k8s_aggregator"), ("os", "os"))


def to_yaml(bundle: SecretsBundle) -> str:
    """The bundle in talosctl's secrets.yaml layout."""
    data = {
        "cluster": {"id": bundle.cluster_id, "secret": bundle.cluster_secret},
        "secrets": {"bootstraptoken": bundle.bootstrap_token,
                    "secretboxencryptionsecret": bundle.secretbox_encryption_secret},
        "trustdinfo": {"token": bundle.trustd_token},
        "certs": {
            **{yaml_key: {"crt": getattr(bundle, attr).crt, "key": getattr(bundle, attr).key}
               for yaml_key, attr in CERT_NAMES},
            "k8sserviceaccount": {"key": bundle.k8s_service_account_key},
        },
    }
    return yaml.safe_dump(data, sort_keys=False)


def from_yaml(text: str) -> SecretsBundle:
    """Parse a talosctl secrets.yaml; a ValueError names every missing or malformed key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The parser's message quotes the offending text, which may be a key: give the line only.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"secrets.yaml is not valid YAML{where}") from None
    missing: list[str] = []

    def get(path: str) -> str:
        node: Any = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str) or not node:
            missing.append(path)
            return ""
        return node

    def pair(name: str) -> CertPair:
        return CertPair(crt=get(f"certs.{name}.crt"), key=get(f"certs.{name}.key"))

    bundle = SecretsBundle(
        cluster_id=get("cluster.id"), cluster_secret=get("cluster.secret"),
        bootstrap_token=get("secrets.bootstraptoken"),
        secretbox_encryption_secret=get("secrets.secretboxencryptionsecret"),
        trustd_token=get("trustdinfo.token"),
        os=pair("os"), k8s=pair("k8s"), k8s_aggregator=pair("k8saggregator"), etcd=pair("etcd"),
        k8s_service_account_key=get("certs.k8sserviceaccount.key"),
    )
    if missing:
        raise ValueError(f"secrets.yaml: missing or empty: {', '.join(missing)}")
    return bundle


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (0700) if absent; an existing directory is left as the operator set it."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


SECRETS_FILE = "secrets.yaml"
#: files a deploy leaves in the cluster folder: their presence means the cluster was deployed
DEPLOY_TRACES = ("cluster.json", "talosconfig", "kubeconfig")


def _restore_hint(folder: Path) -> str:
    return (f"restore it with `drover secrets restore {folder.name} BACKUP` or from your own "
            f"copy (mode 0600)")


def load_secrets(cluster_dir: Path) -> SecretsBundle:
    """The cluster's bundle from `cluster_dir/secrets.yaml`; never creates one.

    Missing: SecretsMissing (new secrets would mean new CAs, locking the operator out of a
    running cluster). Open to others, unreadable or malformed: StateError naming the file.
    """
    path = Path(cluster_dir) / SECRETS_FILE
    check_private(path.parent)
    try:
        text = read_private(path, "secrets file")
    except FileNotFoundError:
        raise SecretsMissing(f"{path}: missing; the secrets of cluster {path.parent.name} "
                             "cannot be made again (new CAs would lock you out of its nodes): "
                             f"{_restore_hint(path.parent)}") from None
    try:
        return from_yaml(text)
    except ValueError as exc:  # from_yaml never quotes a value
        raise StateError(f"{path}: damaged ({exc}); {_restore_hint(path.parent)}") from None


def create_secrets(cluster_dir: Path) -> SecretsBundle:
    """Generate the cluster's bundle and save it; if another run saved one first (or it
    already exists), that one is loaded and returned instead: there is only ever one."""
    path = private_dir(Path(cluster_dir)) / SECRETS_FILE
    if not path.exists():
        bundle = generate_secrets()
        try:
            write_private(path, to_yaml(bundle), exclusive=True)
            return bundle
        except FileExistsError:
            pass  # a parallel first run saved its bundle first; everyone must use that one
    return load_secrets(path.parent)


def ensure_secrets(cluster_dir: Path, nodes_exist: bool) -> SecretsBundle:
    """The cluster's bundle, created only for a cluster that has never been deployed: no node
    of it exists (`nodes_exist`, from observing the infrastructure) and its folder holds no
    trace of an earlier deploy (cluster.json, talosconfig, kubeconfig). Otherwise it must load,
    and a missing secrets.yaml stops the operation with SecretsMissing."""
    folder = Path(cluster_dir)
    if (folder / SECRETS_FILE).exists():
        return load_secrets(folder)
    traces = [name for name in DEPLOY_TRACES if (folder / name).exists()]
    if nodes_exist or traces:
        why = ("nodes of the cluster exist" if nodes_exist
               else f"{folder} holds {', '.join(traces)} from an earlier deploy")
        raise SecretsMissing(
            f"{folder / SECRETS_FILE}: missing, but {why}; its secrets cannot be made again "
            f"(new CAs would lock you out of its nodes): {_restore_hint(folder)}. Only if no "
            f"node of the cluster is left, delete {folder} to start afresh")
    return create_secrets(folder)


def _client_cert(ca: CertPair, key: PrivateKey, subject: x509.Name,
                 now: dt.datetime) -> CertPair:
    ca_cert, ca_key = load_certificate(ca.crt), load_private_key(ca.key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + CLIENT_VALIDITY)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
    )
    return _pair(_sign(builder, ca_key), key)


def _reusable_client(path: Path, name: str, ca: CertPair, now: dt.datetime) -> CertPair | None:
    """The admin cert of an existing talosconfig, if it is from this CA and not near expiry."""
    try:
        text = read_private(path, "talosconfig")  # too open: refused, not silently reused
    except FileNotFoundError:
        return None
    try:
        context = yaml.safe_load(text)["contexts"][name]
        pair = CertPair(crt=context["crt"], key=context["key"])
        cert = load_certificate(pair.crt)
        cert.verify_directly_issued_by(load_certificate(ca.crt))
        load_private_key(pair.key)
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError, InvalidSignature):
        return None  # absent, hand-edited or from an older CA: issue a new one
    return pair if cert.not_valid_after_utc - now > RENEW_BEFORE else None


def write_talosconfig(cluster_dir: Path, cluster_name: str, endpoints: list[str],
                      nodes: list[str], bundle: SecretsBundle,
                      now: dt.datetime | None = None) -> Path:
    """Write `cluster_dir/talosconfig` with an os:admin client cert signed by the os CA.

    A re-run rewrites endpoints and nodes but keeps a still-valid client cert, so a talosctl
    session holding the old file keeps working.
    """
    now = now or _now()
    path = ensure_private_dir(cluster_dir) / "talosconfig"
    client = _reusable_client(path, cluster_name, bundle.os, now) or _client_cert(
        bundle.os, ed25519.Ed25519PrivateKey.generate(), _org("os:admin"), now)
    config = {
        "context": cluster_name,
        "contexts": {cluster_name: {"endpoints": list(endpoints), "nodes": list(nodes),
                                    "ca": bundle.os.crt, "crt": client.crt, "key": client.key}},
    }
    return write_private(path, yaml.safe_dump(config, sort_keys=False))


def write_kubeconfig(cluster_dir: Path, cluster_name: str, endpoint: str, bundle: SecretsBundle,
                     now: dt.datetime | None = None) -> Path:
    """Write `cluster_dir/kubeconfig` for admin (O=system:masters) signed by the Kubernetes CA."""
    now = now or _now()
    path = ensure_private_dir(cluster_dir) / "kubeconfig"
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    client = _client_cert(bundle.k8s, _p256(), subject, now)
    user = f"admin@{cluster_name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {
            "server": endpoint, "certificate-authority-data": bundle.k8s.crt}}],
        "users": [{"name": user, "user": {"client-certificate-data": client.crt,
                                          "client-key-data": client.key}}],
        "contexts": [{"name": user, "context": {"cluster": cluster_name, "namespace": "default",
                                                "user": user}}],
        "current-context": user,
    }
    return write_private(path, yaml.safe_dump(config, sort_keys=False))
