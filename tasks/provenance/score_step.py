"""The ``detector_score`` step: every detector scored alike over the experiment's pairs.

Reads each pair step's ``pair.json``. Per owner and detector, the derived pairs (overall, per
transformation family, per family and strength) are scored against all of that owner's
independent pairs: ROC AUC and TPR at each configured FPR with stratified bootstrap intervals
(:mod:`tasks.provenance.scoring`; not estimable when the pool is too small), and the TPR at the
pool's own maximum (zero false positives on the pool), the threshold a small pool does support.
IF detectors carry the unseen-key trigger rate beside them: a fingerprint that fires on any
hinted key is pattern-bound, not key-bound. Pairs a detector cannot score are counted, not
dropped; failed pairs likewise.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import Any

from tasks.config import validate
from tasks.errors import DataError
from tasks.provenance.config import DETECTORS, ScoreConfig
from tasks.provenance.scoring import Estimate, score

CODE_VERSION = "1"
SCORE_COLUMN = {
    "if_fsr": "if_fsr",
    "if_sampled": "if_sampled",
    "huref_ics": "ics",
    "huref_pcs": "pcs",
}
NAMED = {0.01: "1pct", 0.001: "01pct"}  # FPRs with their own columns (the rest: tprs JSON)


def read_pairs(inputs: dict[str, Path]) -> list[dict[str, Any]]:
    """The rows of every wired pair step, in input order."""
    rows = []
    for name in sorted(inputs):
        path = Path(inputs[name]) / "pair.json"
        if not path.is_file():
            raise DataError(f"{path} is missing", "re-run the provenance pair step")
        rows.append(json.loads(path.read_text("utf-8")))
    return rows


def detector_score_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **_: Any
) -> list[dict]:
    """``detector_score`` rows for every (owner, detector, group); also ``scores.json``."""
    cfg: ScoreConfig = validate(ScoreConfig, config, "detector score step")
    pairs = read_pairs(inputs)
    rows = []
    for owner in sorted({p["owner"] for p in pairs}):
        mine = [p for p in pairs if p["owner"] == owner]
        for detector in DETECTORS:
            rows += detector_rows(cfg, owner, detector, mine)
    Path(out_dir, "scores.json").write_text(json.dumps(rows, indent=1, default=str), "utf-8")
    return rows


def groups(derived: list[dict]) -> list[tuple[str, float | None, list[dict]]]:
    """(family, strength, pairs): all, each family, each family x strength."""
    out: list[tuple[str, float | None, list[dict]]] = [("all", None, derived)]
    for fam in sorted({p["family"] for p in derived}):
        members = [p for p in derived if p["family"] == fam]
        out.append((fam, None, members))
        strengths = sorted({p["strength"] for p in members if p["strength"] is not None})
        if len(strengths) > 1:
            out += [(fam, s, [p for p in members if p["strength"] == s]) for s in strengths]
    return out


def detector_rows(cfg: ScoreConfig, owner: str, detector: str, pairs: list[dict]) -> list[dict]:
    """One row per group of derived pairs for one detector of one owner."""
    col = SCORE_COLUMN[detector]
    ok = [p for p in pairs if p["status"] == "ok"]
    pool = [p for p in ok if p["relation"] == "independent"]
    neg = [p[col] for p in pool if p.get(col) is not None]
    derived_all = [p for p in pairs if p["relation"] == "derived"]
    out = []
    for family, strength, members in groups(derived_all):
        live = [p for p in members if p["status"] == "ok"]
        pos = [p[col] for p in live if p.get(col) is not None]
        fprs = sorted(set(cfg.fprs) | set(NAMED), reverse=True)
        est = score(pos, neg, fprs, n_boot=cfg.bootstrap, seed=cfg.seed)
        row = {
            "owner": owner,
            "fingerprint_method": pairs[0].get("fingerprint_method"),
            "detector": detector,
            "family": family,
            "strength": strength,
            "n_derived": len(pos),
            "n_independent": len(neg),
            "n_not_applicable": len(live) - len(pos) + len(pool) - len(neg),
            "n_failed": len(members) - len(live),
            **_estimate("auc", est["auc"]),
            "tprs": json.dumps({f"{f:g}": _as_dict(est[f"tpr@{f:g}"]) for f in cfg.fprs}),
        }
        for fpr, name in NAMED.items():
            row.update(_estimate(f"tpr_at_{name}", est[f"tpr@{fpr:g}"]))
        row.update(_zero_fp(pos, neg, cfg.survive_tpr))
        if detector.startswith("if_"):
            row.update(_triggers(live, pool))
        out.append(row)
    return out


def _zero_fp(pos: list[float], neg: list[float], survive: float) -> dict[str, Any]:
    """TPR above the pool's highest score: the threshold with no false positive on the pool."""
    if not pos or not neg:
        return {"threshold_zero_fp": None, "tpr_zero_fp": None, "survives": None}
    top = max(neg)
    tpr = sum(1 for s in pos if s > top) / len(pos)
    return {"threshold_zero_fp": top, "tpr_zero_fp": tpr, "survives": tpr >= survive}


def _triggers(derived: list[dict], pool: list[dict]) -> dict[str, Any]:
    def mean(ps: list[dict]) -> float | None:
        vals = [p["false_trigger_rate"] for p in ps if p.get("false_trigger_rate") is not None]
        return fmean(vals) if vals else None

    return {"unseen_trigger_rate": mean(derived), "unseen_trigger_rate_pool": mean(pool)}


def _estimate(name: str, e: Estimate) -> dict[str, Any]:
    return {
        name: e.value,
        f"{name}_low": e.low,
        f"{name}_high": e.high,
        f"{name}_why_not": e.why_not,
    }


def _as_dict(e: Estimate) -> dict[str, Any]:
    return {"value": e.value, "low": e.low, "high": e.high, "why_not": e.why_not}


__all__ = ["CODE_VERSION", "detector_score_step", "groups", "read_pairs"]
