"""The ``mergeguard`` summary: a table per pair, where the fingerprint stops surviving, the plot.

Torch-free: reads ``merge_cell`` rows from the result store. ``survival`` answers the grid's
question per method: the lowest weight of the fingerprinted model from which on every cell (mean
over seeds) keeps FSR at or above a threshold, and the weight below which it is gone.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import fmean
from typing import Any

from runner.plan import Step
from runner.results.text import num, render

SURVIVES = 0.5  # FSR at or above this counts as "the fingerprint survives" in the summary


def cell_rows(steps: list[Step], store) -> list[dict[str, Any]]:
    """The ``merge_cell`` rows of the plan's cell steps."""
    # a template and a generated cell can canonicalise to one step: one row
    ids = list(dict.fromkeys(s.step_id for s in steps if s.kind == "merge_cell"))
    return store.read("merge_cell", ids).to_pylist()


def _frac(hits: Any, total: Any) -> str:
    return "-" if not total else f"{hits}/{total}"


def _ci(r: dict, prefix: str) -> str:
    low, high = r.get(f"{prefix}_ci_low"), r.get(f"{prefix}_ci_high")
    return "-" if low is None else f"[{low:.2f},{high:.2f}]"


def table(rows: list[dict[str, Any]]) -> str:
    """One line per cell: method, weights, densities, seed, FSR, false triggers, ICS, utility."""
    header = ["method", "w_fp", "weights", "dens", "seed", "FSR", "95% CI", "false", "ICS a/b/base"]
    header += ["refusal", "math", "status"]

    def order(r: dict) -> tuple:
        return (
            r["role"] != "merged",
            r["merge_method"],
            r["weight_fingerprinted"] or 0,
            r["seed"] or 0,
        )

    lines = []
    for r in sorted(rows, key=order):
        ics = "/".join(num(r.get(k)) for k in ("ics_a", "ics_b", "ics_base"))
        lines.append(
            [
                r["merge_method"] if r["role"] == "merged" else f"({r['role']})",
                num(r.get("weight_fingerprinted")),
                "/".join(f"{w:g}" for w in r["weights"]) if r.get("weights") else "-",
                "/".join(f"{d:g}" for d in r["densities"]) if r.get("densities") else "-",
                num(r.get("seed")),
                _frac(r.get("fsr_hits"), r.get("fsr_total")),
                _ci(r, "fsr"),
                _frac(r.get("false_trigger_hits"), r.get("false_trigger_total")),
                ics,
                num(r.get("refusal_rate")),
                num(r.get("math_accuracy")),
                r["status"] if r["status"] == "ok" else f"FAILED: {str(r.get('error'))[:40]}",
            ]
        )
    return render(header, lines)


def by_method(rows: list[dict[str, Any]]) -> dict[str, dict[float, list[dict]]]:
    """Merged ok rows grouped by method and the fingerprinted model's weight."""
    out: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["role"] == "merged" and r["status"] == "ok" and r.get("fsr") is not None:
            out[r["merge_method"]][round(r["weight_fingerprinted"] or 0.0, 6)].append(r)
    return out


def survival(rows: list[dict[str, Any]], threshold: float = SURVIVES) -> list[str]:
    """Per method with 3+ weights: from which weight on the mean FSR stays >= ``threshold``."""
    out = []
    for method, cells in sorted(by_method(rows).items()):
        weights = sorted(cells)
        if len(weights) < 3:
            continue
        fsr = {w: fmean(r["fsr"] for r in cells[w]) for w in weights}
        holding = [w for w in weights if all(fsr[v] >= threshold for v in weights if v >= w)]
        if not holding:
            out.append(f"  {method}: FSR below {threshold:.0%} even at w_fp = {weights[-1]:g}")
            continue
        lowest = holding[0]
        below = [w for w in weights if w < lowest]
        gone = f"; at {below[-1]:g} it is {fsr[below[-1]]:.0%}" if below else ""
        out.append(
            f"  {method}: FSR >= {threshold:.0%} from w_fp = {lowest:g} up "
            f"({fsr[lowest]:.0%} there){gone}"
        )
    return out


def report(cfg: Any, steps: list[Step], store, ctx) -> str:
    """The summary printed after ``fprun run`` of a mergeguard experiment."""
    rows = cell_rows(steps, store)
    if not rows:
        return f"{cfg.name}: no merge_cell rows yet"
    out = []
    for pair in cfg.pairs:
        mine = [r for r in rows if r["pair"] == pair.name]
        failed = sum(r["status"] != "ok" for r in mine)
        out.append(f"{cfg.name} / {pair.name}: {len(mine)} row(s), {failed} failed")
        out.append(table(mine))
        lines = survival(mine)
        if lines:
            out.append(f"  where the fingerprint survives (mean FSR over seeds >= {SURVIVES:.0%}):")
            out.extend(lines)
    png = plot_path(cfg, ctx)
    try:
        from runner.results.merge_plot import plot_fsr_vs_weight

        out.append(f"plot: {plot_fsr_vs_weight(rows, png, title=cfg.name)}")
    except ImportError as exc:  # matplotlib missing: the table still stands
        out.append(f"plot: not drawn ({exc})")
    return "\n".join(out)


def plot_path(cfg: Any, ctx) -> Path:
    """``ARTIFACTS/mergeguard/<name>/fsr_vs_weight.png``."""
    return (
        Path(ctx.artifacts).expanduser().resolve() / "mergeguard" / cfg.name / "fsr_vs_weight.png"
    )


def trial_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over a sweep trial's merged cells: fsr, false_trigger_rate, math_accuracy, ..."""
    rows = [
        r
        for rec in records
        if rec["result_kind"] == "merge_cell"
        for r in rec["rows"]
        if r.get("role") == "merged"
    ]
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict[str, Any] = {"cells": len(rows), "failed_cells": len(rows) - len(ok)}
    for key in ("fsr", "false_trigger_rate", "math_accuracy", "refusal_rate", "ics_a", "ics_b"):
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            out[key] = fmean(values)
    return out
