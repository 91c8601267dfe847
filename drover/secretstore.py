"""Named secrets (an SSH key, a Proxmox token) that the cluster YAML refers to by the name
of a Prefect Secret block, resolved through one resolver the engine layer registers
(tasks/secrets.py loads Prefect Secret blocks); the library never imports Prefect. A value
is returned to the caller only: it is never cached, logged, or put in an error message.
A resolver raises LookupError when the block does not exist.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from drover.errors import DroverError

Resolver = Callable[[str], str]

_lock = threading.Lock()
_resolver: Resolver | None = None


class SecretUnavailable(DroverError, LookupError):
    """A secret block the config names could not be resolved: no resolver in this process,
    no block of that name, or a block not holding text. Names the block and the field."""


def register_resolver(fn: Resolver | None) -> Resolver | None:
    """Make `fn(block_name) -> value` the process's resolver (None removes it); returns the
    one it replaces, so a test can put it back."""
    global _resolver
    with _lock:
        previous, _resolver = _resolver, fn
    return previous


def has_resolver() -> bool:
    return _resolver is not None


def _how_to_create(block: str) -> str:
    return (f"create it on the Prefect server the workers use: `prefect block create secret` "
            f"(then name it {block!r} in the UI), or in Python "
            f"`Secret(value=...).save({block!r})` (prefect.blocks.system)")


def resolve(block: str, field: str = "") -> str:
    """The text value of the secret block `block`; `field` names the setting that referred to
    it (e.g. spec.provider.tokenSecretBlock), for the error message only."""
    where = f" (named by {field})" if field else ""
    with _lock:
        resolver = _resolver
    if resolver is None:
        raise SecretUnavailable(
            f"secret block {block!r} was not resolved{where}: no secret resolver is registered "
            "in this process. drover's Prefect tasks register one (import tasks); outside "
            "Prefect, pass the value directly or use the setting's file/environment variable")
    try:
        value = resolver(block)
    except LookupError:
        raise SecretUnavailable(f"secret block {block!r}{where} does not exist; "
                                f"{_how_to_create(block)}") from None
    except Exception as exc:  # the resolver's own message: a server unreachable, a bad name
        raise SecretUnavailable(f"secret block {block!r}{where} could not be read: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    if not isinstance(value, str):
        raise SecretUnavailable(f"secret block {block!r}{where} holds a {type(value).__name__}, "
                                "not text; store the secret as one string")
    if not value.strip():
        raise SecretUnavailable(f"secret block {block!r}{where} is empty; "
                                f"{_how_to_create(block)}")
    return value
