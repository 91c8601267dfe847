"""drover's own state files: folders 0700, files 0600, SQLite databases opened so that a
damaged or too-open file is named with its path and a recovery hint, never a raw traceback.
Every read of a file that holds a secret goes through `read_private`, which refuses a file
others may read (its key may have leaked) and names the file and the fix when it cannot be read.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from drover.errors import StateError

#: permission bits nobody but the owner may hold on drover's folders and files
OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) mode 0700; an existing folder open to others is refused."""
    path = Path(path)
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    check_private(path)
    return path


def check_private(path: Path) -> None:
    """Refuse a drover state file or folder that group or others may read, write or enter."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if mode & OPEN_BITS:
        fix = "700" if stat.S_ISDIR(mode) else "600"
        raise StateError(f"{path}: mode {stat.S_IMODE(mode):04o} lets other users in; drover "
                         f"keeps its state private: run `chmod {fix} {path}` (and check who "
                         "may have read it)")


def read_private(path: Path, what: str = "file") -> str:
    """The text of a drover file that holds secrets, once its mode is checked; a missing file
    raises FileNotFoundError (the caller says what to restore), anything else a StateError."""
    path = Path(path)
    check_private(path)  # its folder is checked where drover makes it (private_dir)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        raise StateError(f"{path}: this {what} cannot be read ({exc.strerror}); it must belong "
                         f"to the user running drover: run `chmod 600 {path}` as its "
                         "owner") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise StateError(f"{path}: this {what} cannot be read ({reason}); restore it from a "
                         "backup") from None


def sqlite_connect(path: Path, timeout: float = 60, **kwargs: object) -> sqlite3.Connection:
    """Open a drover database: its folder private, the file 0600 from its first byte."""
    path = Path(path)
    private_dir(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    check_private(path)
    try:
        return sqlite3.connect(path, timeout=timeout, **kwargs)  # type: ignore[arg-type]
    except sqlite3.Error as exc:
        raise damaged(path, exc) from None


def damaged(path: Path, exc: BaseException) -> StateError:
    return StateError(f"{path}: cannot be read as a drover database ({exc}); move it aside "
                      "and restore it from a backup (or delete it to start afresh: what it "
                      "held is then forgotten)")


#: errors that are drover's own doing (a constraint it relies on, a bug), not a damaged file
NOT_DAMAGE = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """Turn 'file is not a database' and corruption into a StateError naming `path`; a busy
    database (locked) stays an OperationalError for the caller's retry, and constraint
    violations or SQL mistakes stay what they are (the file is fine)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, NOT_DAMAGE) or is_busy(exc) or "syntax error" in str(exc):
            raise
        raise damaged(path, exc) from None


def is_busy(exc: BaseException) -> bool:
    """A database another connection holds right now: worth waiting for, not damage."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc)
                                                          or "busy" in str(exc))
