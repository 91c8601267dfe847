"""Secret blocks named in the cluster YAML, resolved through drover.secretstore (a dict stands
in for Prefect's Secret blocks here; tests/flows/test_secret_blocks.py uses real ones):
errors name the block and the field, never the value; SSH keys and Proxmox tokens use it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from drover import secretstore
from drover.errors import DroverError, ProviderError
from drover.provider_settings import SshTarget
from drover.providers.proxmox import ProxmoxProvider
from drover.secretstore import SecretUnavailable
from drover.ssh_auth import SshAuthFailed, _private_key
from tests.unit.test_proxmox import SECRET, TOKEN_ID, FakeProxmox, proxmox_spec

VALUE = "s3cret-value-that-must-never-show"


@pytest.fixture
def blocks() -> Iterator[dict[str, object]]:
    """A registered resolver over a dict of block name -> value; the previous one restored."""
    store: dict[str, object] = {}

    def load(name: str) -> str:
        return store[name]  # type: ignore[return-value]  (KeyError is a LookupError)

    previous = secretstore.register_resolver(load)
    yield store
    secretstore.register_resolver(previous)


@pytest.fixture
def no_resolver() -> Iterator[None]:
    previous = secretstore.register_resolver(None)
    yield
    secretstore.register_resolver(previous)


def test_resolve_returns_the_blocks_value(blocks):
    blocks["pve-token"] = VALUE

    assert secretstore.resolve("pve-token", "spec.provider.tokenSecretBlock") == VALUE


def test_without_a_resolver_the_error_names_the_block_and_field_and_how_to_get_one(no_resolver):
    with pytest.raises(SecretUnavailable) as err:
        secretstore.resolve("pve-token", "spec.provider.tokenSecretBlock")

    message = str(err.value)
    assert "'pve-token' was not resolved (named by spec.provider.tokenSecretBlock)" in message
    assert "no secret resolver is registered" in message
    assert isinstance(err.value, DroverError) and not secretstore.has_resolver()


@pytest.mark.parametrize(("stored", "expected"), [
    (None, r"'k' \(named by f\) does not exist; create it .*prefect block create secret"
           r".*Secret\(value=\.\.\.\)\.save\('k'\)"),
    ({"user": "x"}, r"'k' \(named by f\) holds a dict, not text"),
    ("  \n", r"'k' \(named by f\) is empty"),
])
def test_a_missing_non_text_or_empty_block_is_refused_saying_what_to_do(blocks, stored,
                                                                         expected):
    if stored is not None:
        blocks["k"] = stored

    with pytest.raises(SecretUnavailable, match=expected):
        secretstore.resolve("k", "f")


def test_a_failing_resolver_is_wrapped_with_the_block_name(no_resolver):
    def unreachable(name: str) -> str:
        raise ConnectionError("Prefect API at http://127.0.0.1:4200 refused the connection")

    secretstore.register_resolver(unreachable)

    with pytest.raises(SecretUnavailable, match=r"'k' could not be read: ConnectionError: "
                                                r"Prefect API .* refused"):
        secretstore.resolve("k")


def test_register_resolver_returns_the_one_it_replaces(no_resolver):
    first: Callable[[str], str] = lambda name: "a"  # noqa: E731
    assert secretstore.register_resolver(first) is None
    assert secretstore.register_resolver(None) is first


# ---- consumers: the SSH key of a libvirt host, the Proxmox token -------------------------


def openssh_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def test_ssh_key_comes_from_the_hosts_secret_block(blocks):
    blocks["hv-key"] = openssh_key()
    target = SshTarget(host="hv1", key_secret_block="hv-key")

    key = _private_key(target, None)

    assert key is not None and key.get_name() == "ssh-ed25519"


def test_ssh_key_block_that_is_not_a_key_is_refused_without_quoting_it(blocks):
    blocks["hv-key"] = VALUE
    target = SshTarget(host="hv1", key_secret_block="hv-key")

    with pytest.raises(SshAuthFailed, match="secret block 'hv-key' is not a private key") as err:
        _private_key(target, None)

    assert VALUE not in str(err.value)


def test_ssh_key_block_missing_is_an_auth_error_naming_host_and_block(blocks):
    target = SshTarget(host="hv1", port=2222, key_secret_block="hv-key")

    with pytest.raises(SshAuthFailed, match=r"hv1:2222: secret block 'hv-key' \(named by "
                                            r"keySecretBlock of host hv1\) does not exist"):
        _private_key(target, None)


def test_ssh_key_block_without_a_resolver_is_an_auth_error_before_any_connection(no_resolver):
    target = SshTarget(host="hv1", key_secret_block="hv-key")

    with pytest.raises(SshAuthFailed, match="hv1:22: secret block 'hv-key' was not resolved"):
        _private_key(target, None)


def test_key_file_and_key_secret_block_together_are_refused():
    with pytest.raises(ValueError, match="set keyFile or keySecretBlock, not both"):
        SshTarget(host="hv1", key_file="~/.ssh/id", key_secret_block="hv-key")


def test_proxmox_token_comes_from_its_secret_block_before_the_environment(blocks, monkeypatch,
                                                                          caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PROXMOX_TOKEN_SECRET", "from-the-environment")
    blocks["pve-token"] = SECRET  # the one the fake server lets in
    fake = FakeProxmox()
    client = httpx.Client(transport=httpx.MockTransport(fake.handler))

    provider = ProxmoxProvider(proxmox_spec(tokenSecretBlock="pve-token"), client=client)
    provider.list_nodes()

    assert fake.headers[-1] == f"PVEAPIToken={TOKEN_ID}={SECRET}"
    assert SECRET not in caplog.text and SECRET not in repr(provider)


def test_proxmox_token_block_missing_is_a_provider_error_naming_the_block(blocks):
    with pytest.raises(ProviderError, match=r"Proxmox API token .*: secret block 'pve-token' "
                                            r"\(named by spec.provider.tokenSecretBlock\) "
                                            r"does not exist"):
        ProxmoxProvider(proxmox_spec(tokenSecretBlock="pve-token"))
