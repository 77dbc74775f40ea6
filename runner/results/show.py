"""Text views of the result store: ``fprun results show`` and ``fprun results export``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from runner.results.schemas import KIND_FIELDS, PROVENANCE_NAMES
from runner.results.store import ResultStore
from runner.results.text import render, short
from tasks.errors import ConfigError, StoreError
from tasks.files import atomic_path, check_out


def _check_kind(kind: str) -> None:
    if kind not in KIND_FIELDS:
        raise ConfigError(f"unknown result kind {kind!r}", f"use one of {', '.join(KIND_FIELDS)}")


def format_table(table: pa.Table, *, provenance: bool = False, limit: int = 50) -> str:
    """Render rows as a fixed-width text table (all-null columns dropped)."""
    cols = [
        c
        for c in table.column_names
        if (provenance or c not in PROVENANCE_NAMES or c == "run_key")
        and table.column(c).null_count < table.num_rows
    ]
    rows = table.select(cols).slice(0, limit).to_pylist()
    lines = [render(cols, [[_cell(r[c]) for c in cols] for r in rows], indent="")]
    if table.num_rows > limit:
        lines.append(f"... {table.num_rows - limit} more row(s)")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return json.dumps(v)
    return short(str(v))


def show_tables(results: str, kind: str | None, *, provenance: bool, limit: int) -> str:
    """All (or one) result kinds of a store, one titled table each."""
    if kind:
        _check_kind(kind)
    _check_exists(results)
    store = ResultStore(results)
    kinds = [kind] if kind else store.kinds()
    if not kinds:
        return f"no results under {results}"
    out = []
    for k in kinds:
        t = store.read(k)
        out.append(
            f"# {k} ({t.num_rows} rows)\n" + format_table(t, provenance=provenance, limit=limit)
        )
    return "\n\n".join(out)


def _check_exists(results: str) -> None:
    """A local ``--results`` that is not there is a typo, not an empty store."""
    if "://" in results:
        return
    path = Path(results).expanduser()
    if not path.exists():
        raise StoreError(f"--results {results} does not exist", "pass the --results of a run")
    if not path.is_dir():
        raise StoreError(f"--results {results} is a file", "pass the folder of a result store")


FORMATS = ("parquet", "csv", "json")


def export_kind(results: str, kind: str, out: Path, fmt: str, *, force: bool = False) -> str:
    """Write one kind's rows to the file ``out`` as parquet, csv or JSON lines (atomically; an
    existing file only with ``force``)."""
    _check_kind(kind)
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not a format", f"use {', '.join(FORMATS)}")
    _check_exists(results)
    check_out(out, force=force, file=True)
    table = ResultStore(results).read(kind)
    with atomic_path(out.expanduser()) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        elif fmt == "csv":
            flat = table.drop_columns(
                [c for c in table.column_names if pa.types.is_list(table.schema.field(c).type)]
            )
            pacsv.write_csv(flat, tmp)
        else:
            with tmp.open("w", encoding="utf-8") as fh:
                for row in table.to_pylist():
                    fh.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
    return f"wrote {table.num_rows} {kind} row(s) to {out}"
