"""One private local Ray instance for every test in the session that needs Ray.

Starting Ray costs ~5 s and ~0.7 GB, so tests share one:
``address="local"`` ignores any cluster already running on the machine, auth is disabled (a
loopback-only instance), and it starts after ``fprun_cache`` so workers inherit the session's
``FPRUN_CACHE``. If some other fixture already started Ray, that instance is reused and left to
its owner to stop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_session(fprun_cache: Path) -> Iterator[object]:
    """The connected ``ray`` module (2 CPUs, no dashboard)."""
    ray = pytest.importorskip("ray")
    owner = not ray.is_initialized()
    if owner:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if owner:
        ray.shutdown()
