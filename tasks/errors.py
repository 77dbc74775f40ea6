"""Error families for bad input.

Every failure that the *user* can fix (a wrong path, a misspelled key, an unsafe checkpoint, a model
that does not match) raises a subclass of :class:`FprunError`. The CLI catches the family once,
prints ``error: <problem>; <fix>`` on one line and exits with code 2, before any result is written.
Anything else is a bug or a failed run (exit 1). Lives in ``tasks`` so research code can raise it
without importing ``runner``.
"""

from __future__ import annotations


class FprunError(Exception):
    """Bad input that the user can fix. ``problem`` says what is wrong, ``fix`` what to do."""

    exit_code = 2

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem.strip().rstrip(".")
        self.fix = fix.strip().rstrip(".")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The single line printed by the CLI (newlines folded so it stays one line)."""
        text = f"{self.problem}; {self.fix}"
        return " ".join(text.split())


class ConfigError(FprunError):
    """An experiment or step config is unreadable, misspelled or inconsistent."""


class ModelRefError(FprunError):
    """A model reference (local folder, zoo name, hub id) cannot be resolved."""


class CheckpointError(FprunError):
    """A checkpoint is unsafe (pickle), corrupt, or lacks tensors that are needed."""


class ArchitectureError(FprunError):
    """An unknown architecture, or two models/adapters whose shapes do not match."""


class DataError(FprunError):
    """A dataset is missing, empty, or lacks required fields."""


class FingerprintError(FprunError):
    """A fingerprint or adapter artifact is missing, mismatched or incomplete."""


class StoreError(FprunError):
    """The results or artifacts location is unusable (e.g. a relative path on a multi-node job)."""
