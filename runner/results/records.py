"""Step records: what one finished step produced (its rows, when, where), in one format.

A record lives in three places, all read and written here: the Parquet file
``RESULTS/<result_kind>/<step_id>.parquet``, the truth (a step is done once it exists; only the
driver writes it, last and atomically, :func:`write_result`); ``RECORD_FILE`` in the step's
artifact folder, which carries rows where Ray's return values do not (rank 0 of a Ray Train run,
a sweep trial before the driver writes); and :class:`Outcome`, returned by every executor.
:func:`find_record` checks the store, then the record file, so a sweep never recomputes a step
that ``fprun run`` finished, and vice versa.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from runner.results.schemas import PROVENANCE_NAMES
from runner.results.store import ResultStore, finalize_rows
from tasks.files import atomic_write_json

RECORD_FILE = ".fprun-record.json"


@dataclass
class Outcome:
    """What a finished step returns to the driver: its rows and provenance of the execution."""

    rows: list[dict[str, Any]]
    started_at: datetime
    finished_at: datetime
    device: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (timestamps as ISO strings)."""
        return {
            "rows": self.rows,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "device": self.device,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        """Inverse of :meth:`to_json`."""
        return cls(
            list(data["rows"]),
            datetime.fromisoformat(data["started_at"]),
            datetime.fromisoformat(data["finished_at"]),
            data["device"],
        )


def record_path(folder: str | Path) -> Path:
    """Where a step's record file sits inside its artifact folder."""
    return Path(folder) / RECORD_FILE


def write_record(folder: str | Path, outcome: Outcome) -> Path:
    """Write ``outcome`` as the record file of the step whose artifact folder is ``folder``."""
    return atomic_write_json(record_path(folder), outcome.to_json(), indent=None)


def read_record(folder: str | Path) -> Outcome | None:
    """The record file's Outcome, or None when there is none (or it is unreadable)."""
    try:
        return Outcome.from_json(json.loads(record_path(folder).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError):
        return None


def take_record(folder: str | Path) -> Outcome:
    """Read and remove the record file (a handoff, e.g. from Ray Train's rank 0)."""
    out = read_record(folder)
    if out is None:
        raise RuntimeError(
            f"no readable {RECORD_FILE} in {folder}: is the artifacts folder on "
            "storage that every node shares?"
        )
    record_path(folder).unlink()
    return out


def write_result(store: ResultStore, step: Any, outcome: Outcome) -> pa.Table:
    """Stamp provenance onto ``outcome``'s rows and write the step's result file (driver only)."""
    table = finalize_rows(
        step.result_kind,
        outcome.rows,
        step_id=step.step_id,
        config_hash=step.config_hash,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
        device=outcome.device,
    )
    store.write(step.result_kind, step.step_id, table)
    return table


def stored_outcome(store: ResultStore, step: Any) -> Outcome | None:
    """A finished step's Outcome read back from its result file (provenance columns stripped)."""
    if not store.done(step.result_kind, step.step_id):
        return None
    rows = store.read(step.result_kind, [step.step_id]).to_pylist()
    if not rows:
        return None
    first = rows[0]
    own = [
        {k: v for k, v in r.items() if k not in PROVENANCE_NAMES or k == "datasets"} for r in rows
    ]
    return Outcome(own, first["started_at"], first["finished_at"], first["device"])


def find_record(store: ResultStore | None, step: Any, folder: str | Path) -> Outcome | None:
    """A finished step's Outcome from the result store, else from its record file, else None."""
    if store is not None:
        found = stored_outcome(store, step)
        if found is not None:
            return found
    return read_record(folder)
