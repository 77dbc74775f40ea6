"""Detector scoring: AUC and TPR at fixed FPR against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.provenance.scoring import (
    estimable,
    roc_auc,
    roc_points,
    score,
    threshold_at,
    tpr_at,
)


def test_auc_is_the_share_of_correctly_ordered_pairs_with_ties_as_half():
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([2, 3], [2, 1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_threshold_allows_at_most_the_stated_share_of_independent_pairs():
    neg = list(range(100))  # 0..99
    t = threshold_at(neg, 0.01)  # one pair may lie above: 99 is above 98
    assert t == 98 and sum(x > t for x in neg) == 1
    assert threshold_at(neg, 0.001) == 99  # none above the maximum
    assert tpr_at([98.5, 99.5, 50], neg, 0.01) == pytest.approx(2 / 3)


def test_ties_at_the_threshold_never_push_the_fpr_over():
    neg = [5.0] * 100 + [1.0] * 100
    t = threshold_at(neg, 0.01)
    assert sum(x > t for x in neg) <= 2  # 1% of 200


def test_small_pool_is_not_estimable_at_one_percent():
    assert estimable(99, 0.01) and "needs at least 100" in estimable(99, 0.01)
    assert estimable(100, 0.01) is None
    out = score([1.0, 0.9], [0.1] * 20, fprs=(0.01,), n_boot=50)
    assert out["tpr@0.01"].value is None and "pool has 20" in out["tpr@0.01"].why_not
    assert out["auc"].value == 1.0  # AUC needs no minimum pool


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(2, 1, 50), rng.normal(0, 1, 200)
    a = score(pos, neg, fprs=(0.01,), n_boot=200, seed=3)
    b = score(pos, neg, fprs=(0.01,), n_boot=200, seed=3)
    assert a == b
    auc = a["auc"]
    assert auc.low <= auc.value <= auc.high and 0.8 < auc.value < 0.99


def test_roc_points_run_from_origin_to_one():
    fpr, tpr = roc_points([0.9, 0.8], [0.1, 0.85])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert fpr == sorted(fpr) and tpr == sorted(tpr)
