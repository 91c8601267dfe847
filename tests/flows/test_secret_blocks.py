"""Prefect Secret blocks as drover's secret store, on the session's test server: a block saved
there is what drover.secretstore resolves once tasks.secrets is imported."""

from __future__ import annotations

import importlib

import pytest
from prefect.blocks.system import Secret

import tasks.secrets
from drover import secretstore
from drover.secretstore import SecretUnavailable


@pytest.fixture(autouse=True)
def prefect_resolver():
    previous = secretstore.register_resolver(tasks.secrets.load_secret_block)
    yield
    secretstore.register_resolver(previous)


def test_a_saved_secret_block_resolves_to_its_text_as_stored():
    Secret(value="0123456789").save("drover-test-token", overwrite=True)  # JSON would say int

    assert secretstore.resolve("drover-test-token", "spec.provider.tokenSecretBlock") \
        == "0123456789"


def test_a_multi_line_ssh_key_survives_the_round_trip():
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\nBBBB\n-----END OPENSSH PRIVATE KEY-----\n"
    Secret(value=key).save("drover-test-ssh-key", overwrite=True)

    assert secretstore.resolve("drover-test-ssh-key") == key


def test_a_block_that_does_not_exist_says_how_to_create_it():
    with pytest.raises(SecretUnavailable, match=r"'drover-no-such-block' \(named by "
                                                r"spec.provider.tokenSecretBlock\) does not "
                                                r"exist; .*prefect block create secret"):
        secretstore.resolve("drover-no-such-block", "spec.provider.tokenSecretBlock")


def test_a_dictionary_secret_is_refused_without_showing_it():
    Secret(value={"password": "hunter2-canary"}).save("drover-test-dict", overwrite=True)

    with pytest.raises(SecretUnavailable, match="holds a dict, not text") as err:
        secretstore.resolve("drover-test-dict")

    assert "hunter2-canary" not in str(err.value)


def test_importing_the_tasks_module_registers_the_resolver():
    secretstore.register_resolver(None)

    importlib.reload(tasks.secrets)

    assert secretstore.has_resolver()
