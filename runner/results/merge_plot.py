"""The merge grid's figure: FSR (with its interval) and false triggers against the fingerprinted
model's weight, one line per merge method (matplotlib, no torch).

Random methods with several seeds are drawn as the mean FSR over seeds with the widest interval
among them; the parents' baselines appear as markers at weight 1 (the fingerprinted model) and 0
(the other expert). Written atomically, so a reader never sees half a PNG.
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
    out = {}
    for method, by_w in cells.items():
        if len(by_w) < 2:
            continue  # a single configuration (a template) is not a line
        out[method] = [
            (
                w,
                fmean(r["fsr"] for r in rs),
                min(r["fsr_ci_low"] for r in rs),
                max(r["fsr_ci_high"] for r in rs),
                fmean(r.get("false_trigger_rate") or 0.0 for r in rs),
            )
            for w, rs in sorted(by_w.items())
        ]
    return out


def plot_fsr_vs_weight(rows: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Draw the figure into ``out`` (PNG); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    for method, pts in sorted(_series(rows).items()):
        w = [p[0] for p in pts]
        fsr = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        line = ax.errorbar(w, fsr, yerr=err, marker="o", capsize=3, label=method)
        bx.plot(w, [p[4] for p in pts], marker="o", color=line[0].get_color(), label=method)
    for r in rows:
        if r.get("role") in ("fingerprinted", "expert") and r.get("fsr") is not None:
            x = 1.0 if r["role"] == "fingerprinted" else 0.0
            ax.plot([x], [r["fsr"]], marker="*", markersize=12, color="black")
            bx.plot([x], [r.get("false_trigger_rate") or 0.0], marker="*", markersize=12, color="k")
    ax.set_title("fingerprint success rate (95% Clopper-Pearson)")
    bx.set_title("false triggers (unseen random keys)")
    for a in (ax, bx):
        a.set_xlabel("weight of the fingerprinted model (slerp: t)")
        a.set_ylim(-0.05, 1.05)
        a.grid(alpha=0.3)
    ax.set_ylabel("fraction of keys")
    ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(f"{title} (stars: the parents)")
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
