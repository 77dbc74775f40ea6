"""The ``provenance`` summary: the detector table, and which detector survives what and how hard.

Torch-free: reads the plan's ``provenance_pair`` and ``detector_score`` rows. A TPR the pool cannot
support prints as ``n/e`` with the pool size, never as a number.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from runner.plan import Step
from runner.results.text import num, render


def rows_of(steps: list[Step], store, kind: str) -> list[dict[str, Any]]:
    """The rows of ``kind`` written by the plan's steps."""
    ids = list(dict.fromkeys(s.step_id for s in steps if s.result_kind == kind))
    return store.read(kind, ids).to_pylist() if ids else []


def interval(r: dict, name: str, pct: bool = True) -> str:
    """``0.93 [0.81, 1.00]``, or ``n/e`` with the reason's pool size."""
    v = r.get(name)
    if v is None:
        why = r.get(f"{name}_why_not") or ""
        return "n/e" + (f" ({why.rsplit(' ', 1)[-1]} indep.)" if "pool has" in why else "")
    low, high = r.get(f"{name}_low"), r.get(f"{name}_high")
    body = f"{v:.2f}"
    return body if low is None else f"{body} [{low:.2f},{high:.2f}]"


def detector_table(scores: list[dict[str, Any]]) -> str:
    """Overall and per family: AUC, TPR@1%FPR, TPR with no pool false positive, triggers."""
    header = ["owner", "detector", "family", "n+", "n-", "AUC [95%]", "TPR@1%FPR", "TPR@0FP"]
    header += ["unseen trig."]
    lines = []
    for r in sorted(scores, key=_order):
        if r["strength"] is not None:
            continue
        lines.append(
            [
                r["owner"],
                r["detector"],
                r["family"],
                str(r["n_derived"]),
                str(r["n_independent"]),
                interval(r, "auc"),
                interval(r, "tpr_at_1pct"),
                num(r.get("tpr_zero_fp")),
                num(r.get("unseen_trigger_rate")),
            ]
        )
    return render(header, lines)


def _order(r: dict) -> tuple:
    return (r["owner"], r["detector"], r["family"] != "all", r["family"], r["strength"] or 0)


def survival(scores: list[dict[str, Any]]) -> list[str]:
    """Per family and detector: the strengths at which the detector still separates."""
    by: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in scores:
        if r["strength"] is not None and r.get("survives") is not None:
            by[(r["owner"], r["family"], r["detector"])].append(r)
    out = []
    for (owner, family, det), rs in sorted(by.items()):
        rs.sort(key=lambda r: r["strength"])
        held = [f"{r['strength']:g}" for r in rs if r["survives"]]
        lost = [f"{r['strength']:g}" for r in rs if not r["survives"]]
        out.append(
            f"  {owner} {family:<15} {det:<11} survives at {', '.join(held) or 'none'}"
            + (f"; lost at {', '.join(lost)}" if lost else "")
        )
    return out


def pairs_line(pairs: list[dict[str, Any]]) -> str:
    derived = [p for p in pairs if p["relation"] == "derived"]
    pool = [p for p in pairs if p["relation"] == "independent"]
    failed = [p for p in pairs if p["status"] != "ok"]
    return (
        f"{len(pairs)} pairs: {len(derived)} derived, {len(pool)} independent "
        f"(the pool calibrates every threshold), {len(failed)} failed"
    )


def report(steps: list[Step], store) -> str:
    pairs = rows_of(steps, store, "provenance_pair")
    scores = rows_of(steps, store, "detector_score")
    if not pairs:
        return "provenance: no pair finished yet"
    out = [pairs_line(pairs)]
    for p in pairs:
        if p["status"] != "ok":
            out.append(f"  FAILED {p['suspect']}: {p['error']}")
    if scores:
        n_neg = max(r["n_independent"] for r in scores)
        out += ["", detector_table(scores), ""]
        out.append(
            f"TPR@0FP: share of derived pairs scoring above every one of the {n_neg} pool pairs; "
            "survives = TPR@0FP >= scoring.survive_tpr."
        )
        out += survival(scores)
    return "\n".join(out)


__all__ = ["detector_table", "interval", "report", "rows_of", "survival"]
