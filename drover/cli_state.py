"""`drover secrets backup|restore` and `drover recover`: getting a cluster's state back.

A backup is encrypted with a passphrase ($DROVER_BACKUP_PASSPHRASE, else asked for twice
without echo) or a 32-byte key file (--key-file); nothing secret is ever printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from drover.cli_common import (
    Wait,
    busy,
    checked_name,
    fail,
    known_cluster,
    known_spec,
    out,
    run_flow,
)
from drover.errors import DroverError

secrets_app = typer.Typer(help="Back up and restore a cluster's secrets (encrypted).",
                          no_args_is_help=True)
PASSPHRASE_ENV = "DROVER_BACKUP_PASSPHRASE"
KeyFile = Annotated[Path | None, typer.Option(
    "--key-file", help="a 32-byte key file (mode 0600) instead of a passphrase")]


def _key(key_file: Path | None, confirm: bool) -> object:
    from drover.backup import Key, read_key_file

    if key_file is not None:
        return Key(key_file=read_key_file(key_file))
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        passphrase = typer.prompt("passphrase", hide_input=True,
                                  confirmation_prompt=confirm)
    return Key(passphrase=passphrase)


@secrets_app.command("backup")
def secrets_backup(cluster: str, out_file: Annotated[Path, typer.Option("--out")],
                   key_file: KeyFile = None,
                   overwrite: Annotated[bool, typer.Option(help="replace --out")] = False
                   ) -> None:
    """Write CLUSTER's secrets, spec and client configs to one encrypted file (0600)."""
    from drover.backup import backup

    try:
        names = backup(known_cluster(cluster), out_file, _key(key_file, confirm=True),  # type: ignore[arg-type]
                       overwrite=overwrite)
    except DroverError as exc:
        raise fail(exc) from None
    out.print(f"{cluster}: {', '.join(names)} backed up to {out_file} (encrypted, 0600); "
              "keep it and its passphrase apart", highlight=False)


@secrets_app.command("restore")
def secrets_restore(cluster: str, backup_file: Path, key_file: KeyFile = None,
                    force: Annotated[bool, typer.Option(
                        help="replace different secrets (locks out nodes made with them)")
                    ] = False) -> None:
    """Put CLUSTER's secrets back from an encrypted backup."""
    from drover.backup import restore

    try:
        names = restore(checked_name(cluster), backup_file, _key(key_file, confirm=False),  # type: ignore[arg-type]
                        force=force)
    except DroverError as exc:
        raise fail(exc) from None
    out.print(f"{cluster}: restored {', '.join(names) or 'nothing (already in place)'}",
              highlight=False)


def recover(cluster: str,
            dry_run: Annotated[bool, typer.Option(help="print the plan only")] = False,
            wait: Wait = None) -> None:
    """Restore CLUSTER's etcd from its latest snapshot after quorum was lost."""
    cluster = known_spec(cluster).name
    result = run_flow("flows.recover", "recover_cluster", cluster=cluster, dry_run=dry_run,
                      **busy(wait))
    if dry_run:
        out.print("dry run: nothing was changed", highlight=False)
    for line in result.get("plan", []):
        out.print(line, highlight=False)
    if result.get("message"):
        out.print(result["message"], highlight=False)
