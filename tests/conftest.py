"""Shared test set-up: drover and Prefect state live in temporary folders."""

from __future__ import annotations

import os
import tempfile

# Before anything imports Prefect: no telemetry (it only adds SQLite lock noise),
# and a private PREFECT_HOME so tests never touch the developer's.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="drover-prefect-home-"))
os.environ.setdefault("DROVER_HOME", tempfile.mkdtemp(prefix="drover-home-"))
