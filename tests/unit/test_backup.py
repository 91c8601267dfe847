"""drover.backup: a cluster's secrets sealed with a passphrase or key file, and put back."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from drover.backup import Key, backup, read_key_file, restore
from drover.errors import StateError
from drover.files import write_private
from drover.home import cluster_dir, remember_spec
from drover.machineconfig import SecretsBundle, generate_secrets, load_secrets, to_yaml

PASSPHRASE = Key(passphrase="correct horse battery staple")


@pytest.fixture(scope="module")
def bundles() -> tuple[SecretsBundle, SecretsBundle]:
    """Two bundles for the module: each 4096-bit RSA key takes a while."""
    return generate_secrets(), generate_secrets()


@pytest.fixture
def deployed(make_spec, bundles) -> Path:
    """Cluster "lab"'s folder as a deploy leaves it."""
    folder = cluster_dir("lab")
    write_private(folder / "secrets.yaml", to_yaml(bundles[0]))
    remember_spec(make_spec())
    write_private(folder / "kubeconfig", "kubeconfig of lab")
    write_private(folder / "talosconfig", "talosconfig of lab")
    return folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("key", [PASSPHRASE, Key(key_file=bytes(range(32)))])
def test_backup_then_restore_brings_every_file_back_privately(deployed, tmp_path, key,
                                                              bundles):
    before = {p.name: p.read_text() for p in deployed.iterdir()}
    out = tmp_path / "lab.backup"

    assert backup("lab", out, key) == ["secrets.yaml", "cluster.json", "talosconfig",
                                       "kubeconfig"]
    for path in deployed.iterdir():
        path.unlink()
    restored = restore("lab", out, key)

    assert mode(out) == 0o600
    assert sorted(restored) == sorted(before)
    assert {p.name: p.read_text() for p in deployed.iterdir()} == before
    assert all(mode(p) == 0o600 for p in deployed.iterdir())
    assert load_secrets(deployed) == bundles[0]


def test_the_backup_holds_no_secret_in_the_clear(deployed, tmp_path, bundles):
    out = tmp_path / "lab.backup"
    backup("lab", out, PASSPHRASE)
    data = out.read_bytes()
    for value in (bundles[0].cluster_secret, bundles[0].os.key[:40], bundles[0].bootstrap_token,
                  "kubeconfig of lab"):
        assert value.encode() not in data


@pytest.mark.parametrize("key", [Key(passphrase="wrong passphrase"),
                                 Key(key_file=bytes(32))])
def test_a_wrong_passphrase_or_key_is_refused_and_nothing_is_written(deployed, tmp_path, key):
    out = tmp_path / "lab.backup"
    backup("lab", out, Key(key_file=bytes(range(32))) if key.key_file else PASSPHRASE)
    (deployed / "secrets.yaml").unlink()
    with pytest.raises(StateError, match="wrong passphrase or key, or a damaged backup"):
        restore("lab", out, key)
    assert not (deployed / "secrets.yaml").exists()


@pytest.mark.parametrize("offset", [len(b"DROVER-SECRETS\n") + 5, -1])
def test_a_changed_byte_in_header_or_body_fails_the_restore(deployed, tmp_path, offset):
    out = tmp_path / "lab.backup"
    backup("lab", out, PASSPHRASE)
    data = bytearray(out.read_bytes())
    data[offset] ^= 1
    out.write_bytes(bytes(data))
    with pytest.raises(StateError, match="wrong passphrase or key, or a damaged backup"):
        restore("lab", out, PASSPHRASE)


def test_a_backup_of_another_cluster_is_refused(deployed, tmp_path):
    out = tmp_path / "lab.backup"
    backup("lab", out, PASSPHRASE)
    with pytest.raises(StateError, match="holds the secrets of cluster lab, not other"):
        restore("other", out, PASSPHRASE)


def test_restore_never_replaces_different_secrets_unless_forced(deployed, tmp_path, bundles):
    out = tmp_path / "lab.backup"
    backup("lab", out, PASSPHRASE)
    write_private(deployed / "secrets.yaml", to_yaml(bundles[1]))

    with pytest.raises(StateError, match="different from the backup's.*--force"):
        restore("lab", out, PASSPHRASE)
    assert load_secrets(deployed) == bundles[1]
    restore("lab", out, PASSPHRASE, force=True)
    assert load_secrets(deployed) == bundles[0]


def test_restore_over_the_same_secrets_fills_in_only_what_is_missing(deployed, tmp_path):
    out = tmp_path / "lab.backup"
    backup("lab", out, PASSPHRASE)
    write_private(deployed / "kubeconfig", "a newer kubeconfig")
    (deployed / "talosconfig").unlink()

    assert restore("lab", out, PASSPHRASE) == ["talosconfig"]
    assert (deployed / "kubeconfig").read_text() == "a newer kubeconfig"


def test_an_existing_backup_file_is_not_overwritten_by_mistake(deployed, tmp_path):
    out = tmp_path / "lab.backup"
    backup("lab", out, PASSPHRASE)
    first = out.read_bytes()
    with pytest.raises(StateError, match="exists"):
        backup("lab", out, PASSPHRASE)
    assert out.read_bytes() == first
    backup("lab", out, PASSPHRASE, overwrite=True)
    assert out.read_bytes() != first


@pytest.mark.parametrize("key, problem", [
    (Key(passphrase="short"), "at least 8 characters"),
    (Key(key_file=b"0" * 16), "exactly 32 random bytes"),
    (Key(), "either a passphrase or a key file"),
    (Key(passphrase="long enough", key_file=bytes(32)), "either a passphrase or a key file"),
])
def test_weak_or_ambiguous_keys_are_refused(deployed, tmp_path, key, problem):
    with pytest.raises(StateError, match=problem):
        backup("lab", tmp_path / "lab.backup", key)
    assert not (tmp_path / "lab.backup").exists()


def test_a_backup_of_a_cluster_without_secrets_is_refused(tmp_path):
    with pytest.raises(StateError, match="secrets.yaml: missing"):
        backup("lab", tmp_path / "lab.backup", PASSPHRASE)


def test_files_open_to_others_are_refused(deployed, tmp_path):
    out = tmp_path / "lab.backup"
    backup("lab", out, PASSPHRASE)
    out.chmod(0o644)
    with pytest.raises(StateError, match=f"chmod 600 {out}"):
        restore("lab", out, PASSPHRASE)
    key_file = tmp_path / "key"
    key_file.write_bytes(bytes(32))
    key_file.chmod(0o644)
    with pytest.raises(StateError, match="chmod 600"):
        read_key_file(key_file)
    key_file.chmod(0o600)
    assert read_key_file(key_file) == bytes(32)


def test_not_a_backup_and_a_missing_backup_are_named(tmp_path):
    junk = write_private(tmp_path / "junk", "hello")
    with pytest.raises(StateError, match=f"{junk}: not a drover secrets backup"):
        restore("lab", junk, PASSPHRASE)
    with pytest.raises(StateError, match="no such backup file"):
        restore("lab", tmp_path / "missing", PASSPHRASE)


def test_the_key_never_shows_in_its_repr():
    assert "horse" not in repr(PASSPHRASE) and "horse" not in str(PASSPHRASE)
