"""Secret blocks on the Prefect server as drover's secret store: importing this module registers
a resolver with drover.secretstore, so an SSH key (keySecretBlock) or a Proxmox token
(tokenSecretBlock) is loaded from a Prefect `Secret` block by the worker that needs it, never
passed as a flow parameter. The value is taken as stored (not JSON-decoded) and never logged.
"""

from __future__ import annotations

from prefect.blocks.system import Secret

from drover import secretstore


def load_secret_block(name: str) -> str:
    """The text stored in the Prefect Secret block `name`; LookupError when there is none."""
    try:
        block = Secret.load(name, _sync=True)  # sync even if called under an event loop
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            raise LookupError(name) from None
        raise
    # Secret.get() would JSON-decode the text ("0123" becomes 123): take it as stored
    return block.value.get_secret_value()


secretstore.register_resolver(load_secret_block)
