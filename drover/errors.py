"""The exception tree of drover; only TransientError (and below) is ever retried.

    DroverError
    ├── SpecError (ValueError)          the cluster YAML is invalid; carries every issue
    ├── NodeNotFound (KeyError)         a node the caller named does not exist
    ├── ProviderError                   the infrastructure refused a request
    ├── TalosError                      the Talos API refused a request
    │   ├── NotInMaintenance            an insecure apply to a node past maintenance mode
    │   └── AlreadyBootstrapped         etcd was bootstrapped before (Talos: AlreadyExists)
    ├── QuorumError                     an operation would lose (or has lost) etcd quorum
    ├── StageTimeout (TimeoutError)     a wait ran out; names the node and the stage
    ├── NodeFailed                      a node died; no wait brings it back
    ├── UpgradeFailed                   a node came back on its old version (rolled back)
    ├── RetriesExhausted                a call kept failing transiently; no further retry
    └── TransientError                  worth retrying: a flaky API, a failed create
"""

from __future__ import annotations


class DroverError(Exception):
    """Base of every error drover raises on purpose."""


class SpecError(DroverError, ValueError):
    """The cluster specification is invalid; `issues` lists every problem."""

    def __init__(self, source: str, issues: list[str]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {source}: {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} problem(s) in the cluster config\n{lines}")


class NodeNotFound(DroverError, KeyError):
    """A node the caller named does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "node not found"


class ProviderError(DroverError):
    """The infrastructure refused a request (a name already taken, no address left)."""


class TalosError(DroverError):
    """The Talos API refused a request."""


class NotInMaintenance(TalosError):
    """An insecure (maintenance-mode) call reached a node that already has a config."""


class AlreadyBootstrapped(TalosError):
    """etcd on this cluster was bootstrapped before; Talos answers AlreadyExists."""


class QuorumError(DroverError):
    """An operation would lose etcd quorum, or the cluster already lost it."""


class StageTimeout(DroverError, TimeoutError):
    """A wait ran out of time; the message names the node and the stage."""

    def __init__(self, stage: str, node: str, detail: str) -> None:
        self.stage = stage
        self.node = node
        super().__init__(f"{node}: {stage}: {detail}")


class NodeFailed(DroverError):
    """A node died (power loss, crashed VM): no wait brings it back, only a replacement."""


class UpgradeFailed(DroverError):
    """A node's upgrade failed and Talos rolled it back to its previous image."""


class RetriesExhausted(DroverError):
    """A call failed transiently on every attempt; the step fails without more retries."""


class TransientError(DroverError):
    """A failure worth retrying: a flaky API call, a create that may succeed next time."""


def is_transient(exc: BaseException) -> bool:
    """Whether a step that raised `exc` may be retried as a whole."""
    return isinstance(exc, TransientError)
