"""Task: the health gate, with a progress artifact updated while nodes come up."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE

from drover import deploy
from drover.spec import ClusterSpec


@task(name="wait-healthy", cache_policy=NONE)
def wait_healthy(spec: ClusterSpec) -> dict[str, float]:
    """Wait until etcd is full and healthy, the API answers and every node is Ready.

    Returns how many seconds into the wait each node was first seen Ready.
    """
    logger = get_run_logger()
    total = spec.node_count
    progress = create_progress_artifact(0.0, key=f"deploy-{spec.name}-progress",
                                        description=f"{spec.name}: nodes Ready")

    def report(state: deploy.Readiness) -> None:
        logger.info("%s: %d/%d nodes Ready; etcd %d/%d healthy; API %s", spec.name,
                    len(state.ready), total, state.health.healthy_members(),
                    spec.spec.control_plane.count, "up" if state.health.api_up else "down")
        update_progress_artifact(progress, 100.0 * len(state.ready) / max(total, 1))

    state = deploy.wait_healthy(deploy.Infra.open(spec), report)
    update_progress_artifact(progress, 100.0)
    return state.ready_after
