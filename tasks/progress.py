"""Progress and dry runs in the UI: one progress artifact per run (`<flow>-<cluster>-progress`)
fed by the run's board (drover.progress), and dry runs named, tagged and given their plan."""

from __future__ import annotations

import contextvars
import logging
import threading
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from drover.progress import RunProgress

DRY_RUN_TAG = "dry-run"
_log = logging.getLogger(__name__)


class ProgressArtifact:
    """The run's progress artifact, updated from its board at most once per `interval` seconds
    of wall time by a thread of its own (task threads never wait for the API), and once more,
    at once, when the run ends: 100% for a completed run, the failed summary otherwise."""

    def __init__(self, board: RunProgress, interval: float = 0.25) -> None:
        self.board, self.interval = board, interval
        self.key = f"{board.flow}-{board.cluster}-progress"
        self.id: UUID | None = None
        self._changed, self._stop = threading.Event(), threading.Event()
        self._posted: tuple[float, str] | None = None
        self._lock = threading.Lock()
        try:
            self.id = create_progress_artifact(board.percent(), key=self.key,
                                               description=board.summary())
        except Exception as exc:  # the UI's view must never stop the run
            _log.warning("%s: no progress artifact (%s)", self.key, exc)
            return
        board.listen(lambda _: self._changed.set())
        context = contextvars.copy_context()  # the run's settings and client, in the thread
        self._thread = threading.Thread(target=context.run, args=(self._loop,), daemon=True,
                                        name=f"progress-{self.key}")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.is_set():
                return
            self._changed.clear()
            self._post()
            self._stop.wait(self.interval)

    def _post(self) -> None:
        with self._lock:  # the last word is the final state's, never a late intermediate one
            update = (self.board.percent(), self.board.summary())
            if self.id is None or update == self._posted:
                return
            try:
                update_progress_artifact(self.id, update[0], description=update[1])
                self._posted = update
            except Exception as exc:
                _log.warning("%s: progress not updated (%s)", self.key, exc)

    def close(self) -> None:
        """Post the board's final state now and stop updating."""
        if self.id is None:
            return
        self._stop.set()
        self._changed.set()
        self._thread.join(timeout=10)
        self._post()


def dry_run_name() -> str:
    """flow_run_name for drover's flows: a dry run is called dry-run-<cluster>-<its name>, so
    the runs list tells it from a real one; any other run keeps the name Prefect gave it."""
    name = flow_run.name or "run"
    parameters = flow_run.parameters
    if not parameters.get("dry_run") or name.startswith("dry-run-"):
        return name
    cluster = parameters.get("cluster") or Path(str(parameters.get("config") or "")).stem
    return f"dry-run-{str(cluster)[:40] or 'cluster'}-{name}"


@task(name="publish-dry-run", cache_policy=NONE)
def publish_dry_run(flow: str, cluster: str, plan: list[str]) -> None:
    """Tag the current run `dry-run` and publish its plan (`<flow>-<cluster>-plan`)."""
    run_id: Any = flow_run.id
    if run_id is not None:
        with get_client(sync_client=True) as client:
            tags = client.read_flow_run(run_id).tags
            if DRY_RUN_TAG not in tags:
                client.update_flow_run(run_id, tags=[*tags, DRY_RUN_TAG])
    lines = "\n".join(f"- {line}" for line in plan) or "- nothing to do"
    create_markdown_artifact(f"# dry run: {flow} {cluster}\n\nNothing was changed. The plan:\n\n"
                             f"{lines}\n", key=f"{flow}-{cluster}-plan",
                             description=f"dry run of {flow} {cluster}: what a real run would do")
    get_run_logger().info("%s: dry run of %s: %d step(s) planned, nothing changed", cluster,
                          flow, len(plan))
