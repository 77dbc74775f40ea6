"""Scoring a detector on (owner, suspect) pairs: ROC AUC and TPR at a fixed FPR, with intervals.

A detector gives each pair a score where higher means "derived". Its threshold is calibrated on
the independent pairs alone (at most a share ``fpr`` of them may score above it), and the TPR is
the share of derived pairs above that threshold. A pool of fewer than ``1/fpr`` independent pairs
cannot support the claim, so the metric is then not estimable rather than a number. Intervals come
from a stratified bootstrap (derived and independent pairs resampled separately, seeded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu

BOOTSTRAP = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A metric with its bootstrap interval, or why it cannot be estimated."""

    value: float | None
    low: float | None = None
    high: float | None = None
    why_not: str | None = None


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a derived pair > score of an independent one), ties counting one half."""
    u = mannwhitneyu(
        np.asarray(pos, float), np.asarray(neg, float), alternative="two-sided"
    ).statistic
    return float(u) / (len(pos) * len(neg))


def threshold_at(neg: Sequence[float], fpr: float) -> float:
    """The score above which at most ``floor(fpr * n)`` independent pairs lie."""
    ranked = np.sort(np.asarray(neg, float))[::-1]
    allowed = math.floor(fpr * len(ranked) + 1e-9)
    return float(ranked[min(allowed, len(ranked) - 1)])


def tpr_at(pos: Sequence[float], neg: Sequence[float], fpr: float) -> float:
    """Share of derived pairs strictly above the threshold calibrated on ``neg``."""
    return float(np.mean(np.asarray(pos, float) > threshold_at(neg, fpr)))


def roc_points(pos: Sequence[float], neg: Sequence[float]) -> tuple[list[float], list[float]]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1), for plotting."""
    p, n = np.asarray(pos, float), np.asarray(neg, float)
    cuts = np.unique(np.concatenate([p, n]))[::-1]
    fprs, tprs = [0.0], [0.0]
    for t in cuts:
        fprs.append(float(np.mean(n >= t)))
        tprs.append(float(np.mean(p >= t)))
    return fprs, tprs


def estimable(n_neg: int, fpr: float) -> str | None:
    """None if ``n_neg`` independent pairs can support a claim at ``fpr``, else the reason."""
    need = math.ceil(1 / fpr - 1e-9)
    if n_neg >= need:
        return None
    return (
        f"not estimable: FPR {fpr:g} needs at least {need} independent pairs, the pool has {n_neg}"
    )


def bootstrap(
    pos: Sequence[float],
    neg: Sequence[float],
    stat: Callable[[np.ndarray, np.ndarray], float],
    n: int = BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``stat`` over stratified resamples of the two groups."""
    rng = np.random.default_rng(seed)
    p, q = np.asarray(pos, float), np.asarray(neg, float)
    values = [stat(rng.choice(p, p.size), rng.choice(q, q.size)) for _ in range(n)]
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def score(pos: Sequence[float], neg: Sequence[float], fprs: Sequence[float] = (0.01, 0.001),
          *, n_boot: int = BOOTSTRAP, seed: int = 0) -> dict[str, Estimate]:  # fmt: skip
    """AUC and TPR at each FPR of ``fprs`` for one detector, with bootstrap intervals.

    Returns ``{"auc": ..., "tpr@0.01": ...}``; an empty side gives estimates with ``why_not``.
    """
    if not len(pos) or not len(neg):
        why = f"not estimable: {len(pos)} derived and {len(neg)} independent pairs"
        return {"auc": Estimate(None, why_not=why)} | {f"tpr@{f:g}": Estimate(None, why_not=why)
                                                       for f in fprs}  # fmt: skip
    out = {"auc": Estimate(roc_auc(pos, neg), *bootstrap(pos, neg, roc_auc, n_boot, seed))}
    for f in fprs:
        why = estimable(len(neg), f)
        if why:
            out[f"tpr@{f:g}"] = Estimate(None, why_not=why)
            continue
        low, high = bootstrap(pos, neg, lambda a, b, f=f: tpr_at(a, b, f), n_boot, seed)
        out[f"tpr@{f:g}"] = Estimate(tpr_at(pos, neg, f), low, high)
    return out
