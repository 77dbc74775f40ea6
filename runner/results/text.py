"""Plain-text rendering shared by every summary fprun prints: tables, numbers, percentages.

One renderer keeps ``fprun results show``, the experiment summaries and the sweep table aligned
the same way; a missing value is always ``-``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A left-aligned fixed-width table, header first, trailing spaces stripped."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(indent + fmt.format(*r).rstrip() for r in [header, *rows])


def short(text: str, width: int = 48) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    return text if len(text) <= width else text[: width - 1] + "…"


def num(v: Any) -> str:
    """Four significant digits; ``-`` for None; non-floats as they are."""
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float | int) and not isinstance(v, bool) else str(v)


def pct(v: Any, sign: str = "") -> str:
    """A fraction as a percentage with one decimal (``sign="%"`` appends it); ``-`` for None."""
    return "-" if v is None else f"{100 * float(v):.1f}{sign}"
