"""The Parquet result store and the provenance every row carries.

Layout: ``RESULTS/<kind>/<step_id>.parquet``, one file per step, written only by the driver, last,
and atomically (temp file + rename), so a step is *done* exactly when its file exists and a crash
never leaves a half-written table. ``RESULTS`` is a local path or a ``pyarrow.fs`` URI (s3://,
gs://); the folder of one kind reads as a dataset in pandas, polars or DuckDB.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from runner.results.schemas import DISCRIMINATORS, KIND_FIELDS, SCHEMA_VERSION, schema_for
from tasks.errors import StoreError


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def versions() -> dict[str, str | None]:
    """Versions recorded on every row (read from metadata, so nothing heavy is imported)."""
    names = ["fprun", "torch", "transformers", "peft", "mergekit", "ray"]
    return {f"{n}_version": _version(n) for n in names}


@functools.cache
def git_sha() -> str:
    """Commit of the fprun checkout, or 'unknown' (e.g. inside a Ray job's uploaded working dir)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return sha + ("-dirty" if dirty else "")


def make_run_key(kind: str, step_id: str, row: dict[str, Any]) -> str:
    """``step_id`` plus the row's discriminator columns."""
    parts = []
    for col in DISCRIMINATORS[kind]:
        val = row.get(col)
        parts.append(
            "-"
            if val is None
            else json.dumps(val, separators=(",", ":"))
            if isinstance(val, list)
            else str(val)
        )
    return step_id + "/" + "/".join(parts)


def finalize_rows(
    kind: str,
    rows: Sequence[dict[str, Any]],
    *,
    step_id: str,
    config_hash: str,
    started_at: datetime,
    finished_at: datetime,
    device: str,
) -> pa.Table:
    """Stamp provenance onto task rows and build the kind's table, rejecting unknown columns."""
    allowed = {fld.name for fld in KIND_FIELDS[kind]} | {"datasets"}
    out = []
    for row in rows:
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(f"{kind} row has columns not in its schema: {sorted(unknown)}")
        full = dict(row)
        full.update(
            run_key=make_run_key(kind, step_id, row),
            step_id=step_id,
            config_hash=config_hash,
            git_sha=git_sha(),
            device=device,
            started_at=started_at,
            finished_at=finished_at,
            schema_version=SCHEMA_VERSION,
            datasets=list(row.get("datasets") or _datasets_of(row)),
            **versions(),
        )
        out.append(full)
    keys = [r["run_key"] for r in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{kind} rows of step {step_id} repeat a run_key; add a discriminator")
    return pa.Table.from_pylist(out, schema=schema_for(kind))


def _datasets_of(row: dict[str, Any]) -> list[str]:
    return [row["dataset"]] if row.get("dataset") else []


def now() -> datetime:
    """UTC timestamp for started_at / finished_at (provenance only, never an ID)."""
    return datetime.now(UTC)


class ResultStore:
    """Parquet files under ``root/<kind>/<step_id>.parquet`` on any pyarrow filesystem."""

    def __init__(self, root: str | Path):
        root = str(root)
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, self.base = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
        self.root = root

    def _path(self, kind: str, step_id: str) -> str:
        return f"{self.base}/{kind}/{step_id}.parquet"

    def done(self, kind: str, step_id: str) -> bool:
        """A step is finished once its Parquet file exists (it is written last, atomically)."""
        return self.fs.get_file_info(self._path(kind, step_id)).type == pafs.FileType.File

    def write(self, kind: str, step_id: str, table: pa.Table) -> str:
        """Write one step's table atomically; an existing file for the step is replaced whole."""
        final = self._path(kind, step_id)
        tmp = f"{self.base}/{kind}/.{step_id}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.create_dir(f"{self.base}/{kind}", recursive=True)
            pq.write_table(table, tmp, filesystem=self.fs)
            self.fs.move(tmp, final)
        except OSError as exc:
            raise StoreError(
                f"cannot write results under {self.root}: {exc}", "pass a writable --results folder"
            ) from exc
        finally:
            if self.fs.get_file_info(tmp).type == pafs.FileType.File:
                self.fs.delete_file(tmp)
        return final

    def kinds(self) -> list[str]:
        """Result kinds that have at least one file."""
        sel = pafs.FileSelector(self.base, allow_not_found=True)
        return sorted(
            i.base_name
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.Directory and i.base_name in KIND_FIELDS
        )

    def read(self, kind: str, step_ids: Iterable[str] | None = None) -> pa.Table:
        """All rows of a kind (optionally only some steps) as one table with the current schema."""
        schema = schema_for(kind)
        if step_ids is not None:
            paths = [self._path(kind, s) for s in step_ids if self.done(kind, s)]
        else:
            sel = pafs.FileSelector(f"{self.base}/{kind}", allow_not_found=True)
            paths = sorted(
                i.path
                for i in self.fs.get_file_info(sel)
                if i.path.endswith(".parquet") and not i.base_name.startswith(".")
            )
        if not paths:
            return schema.empty_table()
        return ds.dataset(paths, schema=schema, filesystem=self.fs, format="parquet").to_table()
