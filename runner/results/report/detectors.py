"""Report section of the provenance benchmark: ROC per detector, survival, key capacity.

The ROC curves come from the ``provenance_pair`` scores (derived pairs against the independent
pool), with TPR at 1% FPR marked where the pool supports it and the zero-false-positive point
otherwise; survival plots each detector's TPR at the pool's top score against a family's strength
from ``detector_score``; the key-capacity curve is any sweep over ``data.n_fingerprint``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from runner.experiments.reports.provenance import interval
from runner.results.report.page import Figure, Section
from runner.results.report.plot import datasets_of, figure
from runner.results.text import num
from tasks.provenance.config import DETECTOR_DOC
from tasks.provenance.score_step import SCORE_COLUMN
from tasks.provenance.scoring import estimable, roc_points, tpr_at

KEYS = "data.n_fingerprint"


def section(store, kinds: list[str], out: Path) -> list[Section]:
    """The provenance section, when its tables (or a key-capacity sweep) are present."""
    sec = Section(
        "Provenance benchmark",
        "Every detector scored on the same (owner, suspect) pairs: derived models made from the "
        "owner's published model, independent models from the pool, which calibrates every "
        "threshold.",
    )
    if "provenance_pair" in kinds:
        pairs = store.read("provenance_pair").to_pylist()
        for owner in sorted({p["owner"] for p in pairs}):
            sec.figures.append(_roc(out, owner, [p for p in pairs if p["owner"] == owner]))
    if "detector_score" in kinds:
        scores = store.read("detector_score").to_pylist()
        sec.figures += _survival(out, scores)
        sec.tables.append(_table(scores))
    if "sweep_trial" in kinds:
        sec.figures += _capacity(out, store.read("sweep_trial").to_pylist())
    return [sec] if sec.figures or sec.tables else []


def _roc(out: Path, owner: str, pairs: list[dict]) -> Figure:
    ok = [p for p in pairs if p["status"] == "ok"]
    png = f"provenance_roc_{owner}.png".replace("/", "_")
    notes = []
    with figure(out / png, width=6.5, height=5) as ax:
        for det, col in SCORE_COLUMN.items():
            pos = [p[col] for p in ok if p["relation"] == "derived" and p.get(col) is not None]
            neg = [p[col] for p in ok if p["relation"] == "independent" and p.get(col) is not None]
            if not pos or not neg:
                notes.append(f"{det}: no scores")
                continue
            fpr, tpr = roc_points(pos, neg)
            (line,) = ax.step(fpr, tpr, where="post", label=f"{det} ({len(pos)}+/{len(neg)}-)")
            if estimable(len(neg), 0.01) is None:
                ax.plot([0.01], [tpr_at(pos, neg, 0.01)], "o", color=line.get_color())
            else:
                zero = sum(1 for s in pos if s > max(neg)) / len(pos)
                ax.plot([0.0], [zero], "x", color=line.get_color(), markersize=9)
        ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
        ax.set_xlabel("false-positive rate (independent pool)")
        ax.set_ylabel("true-positive rate (derived models)")
        ax.set_title(f"owner {owner}: ROC per detector", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    derived = sum(p["relation"] == "derived" for p in pairs)
    pool = len(pairs) - derived
    model = pairs[0]["owner_model"]
    caption = (
        f"ROC of each detector for owner {owner} ({model}): {derived} derived and {pool} "
        f"independent pairs ({len(pairs) - len(ok)} failed). o: TPR at 1% FPR; x: TPR with no "
        f"false positive on the pool, marked instead when the pool has fewer than 100 pairs "
        f"(TPR@1%FPR is then not estimable). Probes: {datasets_of(pairs)}. "
        + "; ".join(f"{d}: {doc}" for d, doc in DETECTOR_DOC.items())
        + ("; " + "; ".join(notes) if notes else "")
        + "."
    )
    return Figure(png, caption)


def _survival(out: Path, scores: list[dict]) -> list[Figure]:
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in scores:
        if r["strength"] is not None and r.get("tpr_zero_fp") is not None:
            by[(r["owner"], r["family"])].append(r)
    figs = []
    for (owner, family), rows in sorted(by.items()):
        png = f"provenance_survival_{owner}_{family}.png".replace("/", "_")
        with figure(out / png, width=6, height=3.8) as ax:
            for det in SCORE_COLUMN:
                pts = sorted(
                    (r["strength"], r["tpr_zero_fp"]) for r in rows if r["detector"] == det
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=det)
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel(f"{family} strength")
            ax.set_ylabel("TPR with no pool false positive")
            ax.set_title(f"owner {owner}: {family}", fontsize=10)
            ax.legend(fontsize=8)
        n = max(r["n_derived"] for r in rows)
        pool = max(r["n_independent"] for r in rows)
        figs.append(
            Figure(
                png,
                f"Survival under {family} (owner {owner}): per strength, the share of derived "
                f"models (up to {n} per strength) each detector scores above all {pool} "
                "independent models.",
            )
        )
    return figs


def _table(scores: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["owner", "detector", "family", "n+", "n-", "AUC [95%]", "TPR@1%FPR", "TPR@0FP"]
    rows = [
        [r["owner"], r["detector"], r["family"], str(r["n_derived"]), str(r["n_independent"]),
         interval(r, "auc"), interval(r, "tpr_at_1pct"), num(r.get("tpr_zero_fp"))]
        for r in sorted(scores, key=lambda r: (r["owner"], r["detector"], r["family"] != "all"))
        if r["strength"] is None
    ]  # fmt: skip
    return header + ["unseen trig."], [
        row + [num(r.get("unseen_trigger_rate"))]
        for row, r in zip(rows, [s for s in scores if s["strength"] is None], strict=False)
    ]


def _capacity(out: Path, trials: list[dict]) -> list[Figure]:
    by: dict[str, list[tuple[float, dict]]] = defaultdict(list)
    for t in trials:
        params = json.loads(t["params"] or "{}")
        if KEYS in params and t["metrics"]:
            by[t["sweep"]].append((float(params[KEYS]), json.loads(t["metrics"])))
    figs = []
    for sweep, pts in sorted(by.items()):
        pts.sort(key=lambda p: p[0])
        png = f"key_capacity_{sweep}.png".replace("/", "_")
        with figure(out / png, width=6.5, height=4) as ax:
            for name in ("fsr", "false_trigger", "utility_delta"):
                xy = [(k, m[name]) for k, m in pts if isinstance(m.get(name), int | float)]
                if xy:
                    ax.plot(*zip(*xy, strict=True), marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("fingerprint keys implanted")
            ax.set_title(f"key capacity ({sweep})", fontsize=10)
            ax.legend(fontsize=8)
        figs.append(
            Figure(
                png,
                f"Key capacity (sweep {sweep}, {len(pts)} trials): FSR on the keys, the trigger "
                "rate on unseen keys and the utility change against the number of keys.",
            )
        )
    return figs
