"""Local-vs-Ray table equality (the reference executor must give the Ray executor's tables).

Rows are compared sorted by ``run_key``, without the columns that say when and where a step ran.
Floating-point columns (and floats inside the ``extra`` JSON) are compared to a relative 1e-5:
the two sides may run their BLAS with different thread counts, or on different CPUs, and then
sum in another order (a training loss differs in the 7th digit). Every other value is exact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from runner.results.store import ResultStore

VOLATILE = {"started_at", "finished_at", "device", "train_seconds", "peak_rss_mb", "seconds"}
REL = 1e-5


def table_rows(results: str | Path, kind: str, artifacts: str | Path | None = None) -> list[dict]:
    """A result table as rows sorted by run_key, without volatile columns; paths under
    ``artifacts`` are written relative to it and timings inside ``extra`` are dropped."""

    def norm(k: str, v: Any) -> Any:
        if k == "extra" and v:
            v = {x: y for x, y in json.loads(v).items() if "seconds" not in x and "rss" not in x}
        if isinstance(v, str) and artifacts is not None:
            v = v.replace(str(artifacts), "<ARTIFACTS>")
        return v

    rows = ResultStore(str(results)).read(kind).to_pylist()
    return sorted(
        ({k: norm(k, v) for k, v in r.items() if k not in VOLATILE} for r in rows),
        key=lambda r: r["run_key"],
    )


def same(a: Any, b: Any) -> bool:
    """Equal, with floats (anywhere inside dicts and lists) equal to a relative ``REL``."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def differences(left: list[dict], right: list[dict]) -> list[tuple]:
    """(run_key, column, left, right) for every cell that differs beyond rounding."""
    assert len(left) == len(right), (len(left), len(right))
    return [
        (a["run_key"], k, a[k], b.get(k))
        for a, b in zip(left, right, strict=True)
        for k in a
        if not same(a[k], b.get(k))
    ]
