"""Encrypted backups of a cluster's secrets: `drover secrets backup|restore`.

One file holds the cluster folder's secrets.yaml, cluster.json, talosconfig and kubeconfig,
sealed with AES-256-GCM under a key derived from a passphrase (scrypt, random salt) or given
as a raw 32-byte key file. The cleartext header (magic, format version, key source, scrypt
cost, salt, nonce) is authenticated with the contents, so a changed byte anywhere fails the
restore. Restore refuses a backup of another cluster and never replaces different secrets
unless forced; no secret value is ever logged, printed or quoted in an error.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from drover.errors import StateError
from drover.files import write_private
from drover.home import cluster_dir
from drover.machineconfig.secrets import SECRETS_FILE, from_yaml
from drover.statefile import check_private, read_private

MAGIC = b"DROVER-SECRETS\n"
VERSION = 1
PASSPHRASE, KEY_FILE = 1, 2  # how the key was made
#: magic, version, key source, log2 of scrypt's cost, salt, nonce
HEADER = struct.Struct(f">{len(MAGIC)}sBBB16s12s")
SCRYPT_LOG2_N = 15  # 32 MiB, ~0.1 s: cheap to use, dear to guess (cryptography's advice)
MIN_PASSPHRASE = 8
KEY_BYTES = 32
#: what a backup holds, secrets first; the others are optional (made again by a deploy)
FILES = (SECRETS_FILE, "cluster.json", "talosconfig", "kubeconfig")


@dataclass(frozen=True, repr=False)
class Key:
    """What unlocks a backup: a passphrase or the bytes of a 32-byte key file (never shown)."""

    passphrase: str | None = None
    key_file: bytes | None = None

    def __repr__(self) -> str:
        return "Key(<redacted>)"

    @property
    def source(self) -> int:
        if (self.passphrase is None) == (self.key_file is None):
            raise StateError("give either a passphrase or a key file, not both or neither")
        return PASSPHRASE if self.passphrase is not None else KEY_FILE

    def derive(self, salt: bytes, log2_n: int) -> bytes:
        if self.source == KEY_FILE:
            assert self.key_file is not None
            if len(self.key_file) != KEY_BYTES:
                raise StateError(f"a key file must hold exactly {KEY_BYTES} random bytes (this "
                                 f"one holds {len(self.key_file)}): make one with `head -c 32 "
                                 "/dev/urandom > KEYFILE && chmod 600 KEYFILE`")
            return self.key_file
        assert self.passphrase is not None
        if not 10 <= log2_n <= 22:
            raise StateError(f"scrypt cost 2^{log2_n} is out of range: a damaged backup")
        return Scrypt(salt=salt, length=KEY_BYTES, n=2 ** log2_n, r=8, p=1).derive(
            self.passphrase.encode())


def read_key_file(path: Path) -> bytes:
    """The bytes of a key file, refused if others may read it."""
    return _read_bytes(Path(path), "key file")


def _read_bytes(path: Path, what: str) -> bytes:
    check_private(path)  # the file only: a backup may sit in any folder of the operator's
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StateError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise StateError(f"{path}: this {what} cannot be read ({exc.strerror})") from None


def backup(cluster: str, out_path: Path, key: Key, overwrite: bool = False) -> list[str]:
    """Write one encrypted file (0600) holding the cluster's secrets and client configs;
    returns the names of the files it holds. Refuses to overwrite `out_path` unless told."""
    if key.source == PASSPHRASE and len(key.passphrase or "") < MIN_PASSPHRASE:
        raise StateError(f"a backup passphrase needs at least {MIN_PASSPHRASE} characters")
    folder = cluster_dir(cluster)
    files: dict[str, str] = {}
    for name in FILES:
        try:
            files[name] = read_private(folder / name, name)
        except FileNotFoundError:
            if name == SECRETS_FILE:
                raise StateError(f"{folder / name}: missing: cluster {cluster} has no secrets "
                                 "to back up") from None
    try:
        from_yaml(files[SECRETS_FILE])
    except ValueError as exc:
        raise StateError(f"{folder / SECRETS_FILE}: damaged ({exc}); a backup of it would not "
                         "restore the cluster") from None
    payload = json.dumps({"cluster": cluster, "created": time.time(), "files": files}).encode()
    salt, nonce = os.urandom(16), os.urandom(12)
    header = HEADER.pack(MAGIC, VERSION, key.source, SCRYPT_LOG2_N, salt, nonce)
    sealed = AESGCM(key.derive(salt, SCRYPT_LOG2_N)).encrypt(nonce, payload, header)
    out_path = Path(out_path)
    _write_bytes(out_path, header + sealed, overwrite)
    return list(files)


def _write_bytes(path: Path, data: bytes, overwrite: bool) -> None:
    """Like files.write_private, for bytes: 0600 from the first byte, atomic, and exclusive
    unless `overwrite` (an older backup is never replaced by mistake)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise StateError(f"{path}: exists; choose another name, or overwrite it "
                         "deliberately") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_backup(in_path: Path, key: Key) -> tuple[str, dict[str, str]]:
    """The cluster name and files a backup holds; StateError for a wrong key or damage."""
    in_path = Path(in_path)
    data = _read_bytes(in_path, "backup file")
    if len(data) < HEADER.size or not data.startswith(MAGIC):
        raise StateError(f"{in_path}: not a drover secrets backup")
    _, version, source, log2_n, salt, nonce = HEADER.unpack_from(data)
    if version != VERSION:
        raise StateError(f"{in_path}: backup format {version} is not one this drover reads "
                         f"({VERSION}); restore it with the drover that made it")
    if source != key.source:
        wanted = "a passphrase" if source == PASSPHRASE else "a key file"
        raise StateError(f"{in_path}: this backup is unlocked with {wanted}")
    try:
        payload = AESGCM(key.derive(salt, log2_n)).decrypt(nonce, data[HEADER.size:],
                                                           data[:HEADER.size])
    except InvalidTag:
        raise StateError(f"{in_path}: wrong passphrase or key, or a damaged backup") from None
    content = json.loads(payload)  # authenticated: written by drover's backup()
    return content["cluster"], content["files"]


def restore(cluster: str, in_path: Path, key: Key, force: bool = False) -> list[str]:
    """Put a backup's files back into the cluster's folder; returns the names written.

    secrets.yaml is written unless the folder already holds different secrets (then only with
    `force`: replacing a live cluster's CAs locks you out of it); the other files are written
    where missing, or all of them with `force`.
    """
    owner, files = read_backup(in_path, key)
    if owner != cluster:
        raise StateError(f"{in_path}: this backup holds the secrets of cluster {owner}, not "
                         f"{cluster}")
    folder = cluster_dir(cluster)
    current = folder / SECRETS_FILE
    try:
        same = read_private(current, "secrets file") == files[SECRETS_FILE]
    except FileNotFoundError:
        same = None
    except StateError:
        same = False  # damaged or unreadable: replacing it is the point, but only when forced
    if same is False and not force:
        raise StateError(f"{current}: holds secrets different from the backup's; restoring would "
                         "replace the cluster's CAs, locking out every node made with the "
                         "current ones: pass --force only if the backup's are the right ones")
    written = []
    for name, text in files.items():
        if name == SECRETS_FILE and same:
            continue
        if name != SECRETS_FILE and (folder / name).exists() and not force:
            continue
        write_private(folder / name, text)
        written.append(name)
    return written
