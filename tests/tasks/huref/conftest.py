"""The tiny model families, resolved once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.huref.families import FAMILIES


@pytest.fixture(scope="session")
def family_paths(fprun_cache) -> dict[str, Path]:
    from tasks.models.zoo import resolve_model

    return {name: resolve_model(name) for name in FAMILIES}
