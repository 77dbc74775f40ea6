"""Statistics of verification counts: intervals, the paper's t-test, an exact binomial test.

Everything is a thin wrapper around ``scipy.stats`` so the numbers match what a reader computes
with the same library; the wrappers only pin down the conventions the paper and the seed leave
implicit (FSR as a fraction, zero-variance runs, which alternative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def proportion_ci(
    n_hit: int, n_total: int, method: str = "exact", confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Interval of a hit rate: exact Clopper-Pearson (default) or Wilson (``method="wilson"``).

    Small probe sets (8 keys: a 12.5% grid) make normal-approximation intervals useless, so
    every FSR and eval proportion carries the exact binomial interval by default.

    Args:
        n_hit: Successes (generations that contained the target, correct answers ...).
        n_total: Denominator (> 0).
        method: ``exact`` or ``wilson`` (scipy's ``proportion_ci`` methods).
        confidence: Two-sided coverage.

    Returns:
        ``(low, high)`` in [0, 1].
    """
    if n_total <= 0:
        raise ValueError("a proportion interval needs n_total > 0")
    if not 0 <= n_hit <= n_total:
        # the seed's denominators can be smaller than its counts (report_FSR_sft_chat.py)
        n_hit = min(max(n_hit, 0), n_total)
    ci = stats.binomtest(n_hit, n_total).proportion_ci(confidence_level=confidence, method=method)
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class TTest:
    """One-sample t-test of per-run FSRs against the paper's threshold."""

    statistic: float
    p_two_sided: float
    p_one_sided: float  # H1: mean > threshold


def ttest_vs_threshold(values: Sequence[float], threshold: float) -> TTest:
    """``scipy.stats.ttest_1samp`` both ways, with the paper's zero-variance convention.

    The seed calls ``ttest_1samp(FSRs, 75)`` (two-sided, scipy's default) while the paper's
    caption states the one-sided alternative "mean FSR above 75%"; both are returned. When every
    run gives the same FSR the standard error is 0: the paper reports t = +inf and p = 0 for
    ten runs at 100%. scipy reaches the same by floating-point accident (and warns, or returns a
    huge finite t when the mean is not exactly representable), so the case is decided here
    explicitly: t = +/-inf with p = 0 (two-sided) when the common value differs from the
    threshold, one-sided p = 0 above it and 1 below it; t and both p-values are NaN when it
    equals the threshold (the test is undefined). Fewer than two runs also give NaN.

    Args:
        values: Per-run FSRs (fractions; the t statistic is scale-free so percentages give
            the same p-values with a threshold in percent).
        threshold: H0 mean (paper: 0.75).
    """
    x = np.asarray(values, dtype=float)
    nan = float("nan")
    if x.size < 2:
        return TTest(nan, nan, nan)
    if np.all(x == x[0]):
        if x[0] == threshold:
            return TTest(nan, nan, nan)
        above = bool(x[0] > threshold)
        return TTest(math.inf if above else -math.inf, 0.0, 0.0 if above else 1.0)
    two = stats.ttest_1samp(x, threshold)
    one = stats.ttest_1samp(x, threshold, alternative="greater")
    return TTest(float(two.statistic), float(two.pvalue), float(one.pvalue))


def binomial_p(n_hit: int, n_total: int, null_rate: float) -> float:
    """Exact one-sided binomial p: P(X >= n_hit) for X ~ Bin(n_total, null_rate).

    Pooling the hits of all sampled runs treats every (run, probe) as a Bernoulli trial; the
    question is whether the model hits the true keys more often than it fires by accident
    (the null rate, chosen by the caller, see ``tasks.verify.step``).
    """
    if n_total <= 0:
        return float("nan")
    return float(stats.binomtest(n_hit, n_total, null_rate, alternative="greater").pvalue)
