"""What an experiment's ``plan()`` and ``summarize()`` may know about the run they belong to."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class PlanContext:
    """Paths of the current run. ``config_path`` resolves relative paths inside a config."""

    config_path: Path
    results: str
    artifacts: str

    def for_member(self, path: Path) -> PlanContext:
        """The same run seen from a suite member's YAML."""
        return replace(self, config_path=Path(path))
