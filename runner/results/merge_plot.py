"""The merge grid's figure: FSR (with its interval) and false triggers against the fingerprinted
model's weight, one line per merge method (matplotlib, no torch).

One row of panels per model pair. Random methods with several seeds are drawn as the mean FSR
over seeds with the widest interval among them; the parents' baselines appear as stars at weight
1 (the fingerprinted model) and 0 (the other expert). Written atomically (no half PNG).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from statistics import fmean
from typing import Any


def _series(
    rows: list[dict[str, Any]],
) -> dict[str, list[tuple[float, float, float, float, float]]]:
    """method -> sorted (weight, fsr, ci_low, ci_high, false triggers) over ok merged cells."""
    cells: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("role") == "merged" and r.get("status") == "ok" and r.get("fsr") is not None:
            cells[r["merge_method"]][round(r.get("weight_fingerprinted") or 0.0, 6)].append(r)
    return {
        method: [
            (
                w,
                fmean(r["fsr"] for r in rs),
                min(r["fsr_ci_low"] for r in rs),
                max(r["fsr_ci_high"] for r in rs),
                fmean(r.get("false_trigger_rate") or 0.0 for r in rs),
            )
            for w, rs in sorted(by_w.items())
        ]
        for method, by_w in cells.items()
    }


def _draw_pair(ax: Any, bx: Any, rows: list[dict[str, Any]], pair: str) -> None:
    series = sorted(_series(rows).items())
    for i, (method, pts) in enumerate(series):
        dodge = (i - (len(series) - 1) / 2) * 0.006  # overlapping lines stay visible
        w = [p[0] + dodge for p in pts]
        fsr = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        line = ax.errorbar(w, fsr, yerr=err, marker="o", capsize=3, label=method)
        bx.plot(w, [p[4] for p in pts], marker="o", color=line[0].get_color(), label=method)
    for r in rows:
        if r.get("role") in ("fingerprinted", "expert") and r.get("fsr") is not None:
            x = 1.0 if r["role"] == "fingerprinted" else 0.0
            ax.plot([x], [r["fsr"]], marker="*", markersize=12, color="black")
            bx.plot([x], [r.get("false_trigger_rate") or 0.0], marker="*", markersize=12, color="k")
    ax.set_title(f"{pair}: fingerprint success rate (95% Clopper-Pearson)")
    bx.set_title(f"{pair}: false triggers (unseen random keys)")
    for a in (ax, bx):
        a.set_xlabel("weight of the fingerprinted model (slerp: t)")
        a.set_ylim(-0.05, 1.05)
        a.grid(alpha=0.3)
    ax.set_ylabel("fraction of keys")
    ax.legend(fontsize=8, loc="lower right")


def plot_fsr_vs_weight(rows: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Draw the figure into ``out`` (PNG): one row of two panels per model pair; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = sorted({r.get("pair") or "pair" for r in rows})
    fig, axes = plt.subplots(len(pairs), 2, figsize=(12, 4.8 * len(pairs)), squeeze=False)
    for (ax, bx), pair in zip(axes, pairs, strict=True):
        _draw_pair(ax, bx, [r for r in rows if (r.get("pair") or "pair") == pair], pair)
    if title:
        fig.suptitle(f"{title} (stars: the parents; single points: one configuration)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
