"""Experiment kinds: one torch-free module per ``kind:`` value (docs/architecture.md).

Each module declares ``Config`` (a :class:`runner.config.Strict` model whose ``kind`` field is a
``Literal``), ``plan(cfg, ctx) -> list[Step]`` and ``RESULT_KINDS`` (the result tables it writes).
Optionally ``summarize(cfg, store, steps) -> str`` prints a human table after a run. A new kind adds
one file and one line here; it never edits the other kinds.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from tasks.errors import ConfigError

KINDS: dict[str, str] = {
    "suite": "runner.experiments.suite",
    "if_sft": "runner.experiments.if_sft",
    "if_adapter": "runner.experiments.if_adapter",
    "huref": "runner.experiments.huref",
    "huref_encoder": "runner.experiments.huref_encoder",
    "sweep": "runner.experiments.sweep",
    "mergeguard": "runner.experiments.mergeguard",
    "provenance": "runner.experiments.provenance",
}


def get_kind(kind: str, *, source: str = "config") -> ModuleType:
    """Import the module for ``kind`` (lazy, so validating one kind never imports the others)."""
    target = KINDS.get(kind)
    if target is None:
        close = difflib.get_close_matches(kind, list(KINDS), n=1)
        known = ", ".join(sorted(KINDS))
        hint = f"did you mean {close[0]!r}?" if close else f"known kinds: {known}"
        raise ConfigError(f"{source}: unknown experiment kind {kind!r}", hint)
    return importlib.import_module(target)
