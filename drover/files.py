"""Files that hold secrets: written atomically, mode 0600 from the first byte."""

from __future__ import annotations

import os
import secrets as rand
from pathlib import Path


def write_private(path: Path, text: str, exclusive: bool = False) -> Path:
    """Write `text` to `path` atomically, readable by the owner only at every instant.

    With `exclusive`, an existing `path` is left untouched and FileExistsError raised, so of two
    processes creating the same file at once exactly one wins.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{rand.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # the umask can only narrow it; make it exact
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic, and fails if another writer got there first
        else:
            os.replace(tmp, path)  # a crash leaves the old file or the new one, never half
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX keeps it in the directory's metadata)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
