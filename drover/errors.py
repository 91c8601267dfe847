"""The exception tree of drover; only TransientError (and below) is ever retried.

    DroverError
    ├── SpecError (ValueError)          the cluster YAML is invalid; carries every issue
    ├── InvalidName (ValueError)        a cluster or node name, or a path, that may not be used
    ├── StateError                      drover's own state is missing, damaged or unsafe
    │   └── SecretsMissing              an existing cluster's secrets are gone or unreadable
    ├── ClusterBusy                     another operation holds the cluster's lease
    ├── NodeNotFound (KeyError)         a node the caller named does not exist
    ├── ProviderError                   the infrastructure refused a request
    ├── TalosError                      the Talos API refused a request
    │   ├── NotInMaintenance            an insecure apply to a node past maintenance mode
    │   └── AlreadyBootstrapped         etcd was bootstrapped before (Talos: AlreadyExists)
    ├── QuorumError                     an operation would lose (or has lost) etcd quorum
    ├── DowngradeRefused (ValueError)   a target version below what the cluster runs
    ├── PreflightFailed                 the infrastructure cannot take the plan; nothing made
    ├── ReplacementUnfinished           another node's replacement stopped part-way
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


class InvalidName(DroverError, ValueError):
    """A cluster or node name, or a file path, that is malformed or reaches outside its place."""


class StateError(DroverError):
    """A file drover keeps (database, secrets, remembered spec) is missing, damaged or too
    open; the message names the file and how to recover."""


class SecretsMissing(StateError):
    """The secrets of a cluster that has nodes are gone: regenerating them would lock the
    operator out (new CAs), so every operation stops and says what to restore."""


class ClusterBusy(DroverError):
    """Another run holds the cluster's lease; the message names the holder."""


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


class DowngradeRefused(DroverError, ValueError):
    """A version lower than what the cluster runs, without an explicit allow."""


class PreflightFailed(DroverError):
    """A shortfall found before anything was created (addresses, quota, names, image)."""


class ReplacementUnfinished(DroverError):
    """A replacement stopped part-way (a killed run); it must be finished before another."""


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
