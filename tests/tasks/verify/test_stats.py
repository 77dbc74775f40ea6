"""tasks.verify.stats against closed forms and textbook values."""

from __future__ import annotations

import math
from dataclasses import astuple

import pytest
from scipy import stats as sps

from tasks.verify.stats import binomial_p, proportion_ci, ttest_vs_threshold


def test_proportion_ci_closed_forms_at_the_edges():
    # k = 0: upper = 1 - (alpha/2)^(1/n); k = n: lower = (alpha/2)^(1/n)
    low, high = proportion_ci(0, 8)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 8), abs=1e-12)
    low, high = proportion_ci(8, 8)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 8), abs=1e-12)


def test_proportion_ci_textbook_value():
    # R: binom.test(3, 10)$conf.int -> 0.06673951 0.65245285
    low, high = proportion_ci(3, 10)
    assert low == pytest.approx(0.06673951, abs=1e-8)
    assert high == pytest.approx(0.65245285, abs=1e-8)


def test_proportion_ci_matches_beta_quantiles():
    k, n = 22, 112  # the seed's "similar" 19.6%
    low, high = proportion_ci(k, n)
    assert low == pytest.approx(sps.beta.ppf(0.025, k, n - k + 1), rel=1e-9)
    assert high == pytest.approx(sps.beta.ppf(0.975, k + 1, n - k), rel=1e-9)


def test_proportion_ci_clamps_seed_counts_above_the_denominator():
    # report_FSR_sft_chat.py can count more hits than it divides by
    assert proportion_ci(150, 112) == proportion_ci(112, 112)
    with pytest.raises(ValueError):
        proportion_ci(0, 0)


def test_ttest_zero_variance_follows_the_paper():
    t = ttest_vs_threshold([1.0] * 10, 0.75)
    assert t.statistic == math.inf and t.p_two_sided == 0.0 and t.p_one_sided == 0.0
    below = ttest_vs_threshold([0.5] * 10, 0.75)
    assert below.statistic == -math.inf and below.p_two_sided == 0.0 and below.p_one_sided == 1.0
    # a common value that is not exactly representable: scipy alone gives a huge finite t
    odd = ttest_vs_threshold([0.875] * 10, 0.75)
    assert odd.statistic == math.inf and odd.p_one_sided == 0.0
    undefined = ttest_vs_threshold([0.75] * 5, 0.75)
    assert all(math.isnan(v) for v in astuple(undefined))
    assert all(math.isnan(v) for v in astuple(ttest_vs_threshold([1.0], 0.75)))


def test_ttest_against_the_formula():
    x = [0.875, 1.0, 0.875, 1.0, 1.0, 0.75, 1.0, 1.0, 0.875, 1.0]
    n = len(x)
    mean = sum(x) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    t_hand = (mean - 0.75) / (sd / math.sqrt(n))
    res = ttest_vs_threshold(x, 0.75)
    assert res.statistic == pytest.approx(t_hand, rel=1e-12)
    assert res.p_two_sided == pytest.approx(2 * sps.t.sf(t_hand, n - 1), rel=1e-9)
    assert res.p_one_sided == pytest.approx(res.p_two_sided / 2, rel=1e-9)  # mean above 0.75
    # scale-free: the seed's percentages give the same p-values
    pct = ttest_vs_threshold([100 * v for v in x], 75)
    assert pct.p_two_sided == pytest.approx(res.p_two_sided, rel=1e-9)


def test_binomial_p_is_the_upper_tail():
    hand = sum(math.comb(10, k) * 0.3**k * 0.7 ** (10 - k) for k in range(7, 11))
    assert binomial_p(7, 10, 0.3) == pytest.approx(hand, rel=1e-9)
    assert binomial_p(80, 80, 0.369) == pytest.approx(0.369**80, rel=1e-6)
    assert binomial_p(0, 80, 0.1) == pytest.approx(1.0)
    assert math.isnan(binomial_p(0, 0, 0.1))
