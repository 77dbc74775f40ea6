"""Matplotlib helpers the report sections share: a headless figure saved atomically as PNG."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.files import atomic_path


@contextlib.contextmanager
def figure(path: Path, *, width: float = 8.0, height: float = 4.5, ncols: int = 1) -> Iterator[Any]:
    """Yield a matplotlib Axes (a list of ``ncols`` when more than one); on exit the figure is
    saved to ``path`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, ncols, figsize=(width, height))
    try:
        yield list(ax) if ncols > 1 else ax
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def datasets_of(rows: list[dict]) -> str:
    """The distinct dataset names of some rows, for captions (stand-ins keep their labels)."""
    names = sorted({d for r in rows for d in (r.get("datasets") or []) if d})
    if not names:
        names = sorted({r["dataset"] for r in rows if r.get("dataset")})
    return "; ".join(names) or "no dataset recorded"


def models_of(rows: list[dict], key: str = "model_ref") -> str:
    """The distinct models of some rows, for captions."""
    return ", ".join(sorted({str(r[key]) for r in rows if r.get(key)})) or "-"
