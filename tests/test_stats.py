"""Statistics of ``adabench compare`` checked against known truth, not against their own output."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from adabench.harness.stats import (
    bootstrap_mean_ci,
    bootstrap_series_ci,
    finite_median,
    holm,
    paired_comparison,
    verdict,
)

TRUE_MEAN = 3.0


def _coverage(confidence: float, trials: int = 300, n: int = 40) -> float:
    """Fraction of intervals from N(TRUE_MEAN, 2) samples of size n that contain TRUE_MEAN."""
    rng = np.random.default_rng(12345)
    hits = 0
    for t in range(trials):
        x = rng.normal(TRUE_MEAN, 2.0, size=n)
        _, low, high, _ = bootstrap_mean_ci(x, confidence=confidence, n_resamples=500, seed=t)
        hits += low <= TRUE_MEAN <= high
    return hits / trials


# ---------------------------------------------------------------- bootstrap_mean_ci


def test_mean_ci_covers_true_mean_at_nominal_rate():
    # 1000 independent intervals: hits ~ Binomial(1000, p), sd of the rate
    # sqrt(p (1 - p) / 1000) ~= 0.007. The percentile bootstrap of a mean at n = 40
    # under-covers a little (plug-in sd, normal-like quantiles: |t_39| < 1.96 * sqrt(39/40)
    # has probability ~0.94), so the band 0.91-0.97 sits ~4 sd either side of 0.935-0.95.
    # A 90 % interval (~0.88) or a 99 % one (~0.98) falls outside it.
    assert 0.91 <= _coverage(0.95, trials=1000) <= 0.97


def test_mean_ci_confidence_is_used():
    # A 50 % interval covers about half the time (sd of the rate ~0.029 at 300 trials);
    # a code path that ignored `confidence` would give ~0.95 here.
    assert 0.38 <= _coverage(0.50) <= 0.62


def test_mean_ci_no_values():
    assert bootstrap_mean_ci([]) == (None, None, None, 0)
    assert bootstrap_mean_ci([math.nan, math.inf, -math.inf]) == (None, None, None, 0)


def test_mean_ci_single_value_has_no_interval():
    assert bootstrap_mean_ci([2.5]) == (2.5, None, None, 1)
    assert bootstrap_mean_ci([math.nan, 2.5, math.inf]) == (2.5, None, None, 1)


def test_mean_ci_identical_values_degenerate_interval_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_mean_ci([0.7, 0.7, 0.7, math.nan]) == (0.7, 0.7, 0.7, 3)


def test_mean_ci_drops_non_finite():
    mean, low, high, n = bootstrap_mean_ci([1.0, math.nan, 2.0, math.inf, 6.0, -math.inf])
    assert n == 3
    assert mean == pytest.approx(3.0)
    # A bootstrap mean of {1, 2, 6} lies within [1, 6]; NaN / inf leaking in would not.
    assert 1.0 <= low <= mean <= high <= 6.0


def test_mean_ci_matches_scipy_percentile_bootstrap():
    x = np.array([0.3, 1.9, 2.2, 4.0, 4.1, 7.5, 8.0])
    ref = stats.bootstrap(
        (x,), np.mean, method="percentile", vectorized=True, n_resamples=2000,
        confidence_level=0.9, random_state=np.random.default_rng(7),
    ).confidence_interval
    mean, low, high, n = bootstrap_mean_ci(x, confidence=0.9, seed=7)
    assert (mean, n) == (pytest.approx(x.sum() / 7), 7)
    assert (low, high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_mean_ci_deterministic_for_a_seed_and_seed_matters():
    x = np.random.default_rng(3).exponential(size=25)
    first = bootstrap_mean_ci(x, seed=11)
    assert bootstrap_mean_ci(x, seed=11) == first
    assert bootstrap_mean_ci(x, seed=12)[1:3] != first[1:3]


def test_mean_ci_returns_plain_python_types():
    mean, low, high, n = bootstrap_mean_ci(np.array([1.0, 2.0, 4.0], dtype=np.float32))
    assert all(type(v) is float for v in (mean, low, high)) and type(n) is int


def test_mean_ci_interval_brackets_mean_even_at_low_confidence():
    # Skewed data and a 1 % interval: the percentile interval may miss the mean; it is clipped.
    x = [0.0] * 8 + [100.0]
    mean, low, high, _ = bootstrap_mean_ci(x, confidence=0.01)
    assert low <= mean <= high


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_mean_ci_rejects_bad_confidence(confidence):
    with pytest.raises(ValueError):
        bootstrap_mean_ci([1.0, 2.0], confidence=confidence)


# ---------------------------------------------------------------- bootstrap_series_ci


def test_series_ragged_rows_and_nan_give_known_window_means():
    rows = [[1.0, 2.0, 3.0, math.nan], [3.0, 4.0], [5.0, math.nan, 7.0]]
    out = bootstrap_series_ci(rows)
    # windows: (1+3+5)/3, (2+4)/2, (3+7)/2, nothing
    assert out["n"] == [3, 2, 2, 0]
    assert out["mean"][:3] == pytest.approx([3.0, 3.0, 5.0])
    assert out["mean"][3] is None and out["ci_low"][3] is None and out["ci_high"][3] is None
    for w in range(3):
        assert out["ci_low"][w] <= out["mean"][w] <= out["ci_high"][w]
    # A resampled mean never leaves the range of the window's own values.
    assert out["ci_low"][0] >= 1.0 and out["ci_high"][0] <= 5.0
    assert out["ci_low"][2] >= 3.0 and out["ci_high"][2] <= 7.0


def test_series_single_job_window_has_no_interval():
    out = bootstrap_series_ci([[1.0, 2.0], [3.0], [math.inf, math.nan]])
    assert out["n"] == [2, 1]
    assert out["mean"] == pytest.approx([2.0, 2.0])
    assert out["ci_low"][1] is None and out["ci_high"][1] is None
    assert out["ci_low"][0] is not None


def test_series_two_jobs_known_percentile_interval():
    # Jobs scoring 0 and 1: resampled means are 0, 0.5, 1 with prob 1/4, 1/2, 1/4,
    # so the 2.5th percentile is 0 and the 97.5th is 1.
    out = bootstrap_series_ci([[0.0, 10.0], [1.0, 10.0]])
    assert out["mean"] == pytest.approx([0.5, 10.0])
    assert (out["ci_low"][0], out["ci_high"][0]) == pytest.approx((0.0, 1.0))
    assert (out["ci_low"][1], out["ci_high"][1]) == pytest.approx((10.0, 10.0))


def test_series_covers_true_window_means():
    # 200 data sets of 30 jobs x 3 windows, window w ~ N(w, 1): ~600 intervals in all
    # (windows of one set share jobs, so treat it as 200 effective trials: sd ~0.015).
    rng = np.random.default_rng(99)
    hits = np.zeros(3)
    trials = 200
    for t in range(trials):
        rows = rng.normal(np.arange(3.0), 1.0, size=(30, 3)).tolist()
        out = bootstrap_series_ci(rows, n_resamples=500, seed=t)
        hits += [lo <= w <= hi for w, (lo, hi) in enumerate(zip(out["ci_low"], out["ci_high"]))]
    assert np.all((0.89 <= hits / trials) & (hits / trials <= 0.99))


def test_series_deterministic_and_no_empty_slice_warning():
    rows = [[0.1, math.nan], [0.5, math.nan], [0.9, math.nan, 3.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = bootstrap_series_ci(rows, seed=5)
    assert bootstrap_series_ci(rows, seed=5) == first
    assert first["n"] == [3, 0, 1]


def test_series_empty_input():
    assert bootstrap_series_ci([]) == {"mean": [], "ci_low": [], "ci_high": [], "n": []}


# ---------------------------------------------------------------- paired_comparison


def test_paired_p_value_is_scipy_wilcoxon():
    base = np.array([0.61, 0.52, 0.70, 0.44, 0.58, 0.66, 0.49, 0.73, 0.55, 0.60])
    other = np.array([0.64, 0.50, 0.78, 0.51, 0.59, 0.71, 0.47, 0.80, 0.62, 0.66])
    out = paired_comparison(base, other)
    assert out["p_value"] == pytest.approx(stats.wilcoxon(other - base).pvalue)
    assert out["n"] == 10
    assert out["mean_diff"] == pytest.approx(np.mean(other - base))
    assert out["ci_low"] <= out["mean_diff"] <= out["ci_high"]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_paired_exact_p_value_by_hand(sign):
    # d = ±[1..5]: under H0 each of the 2**5 sign patterns is equally likely, and only
    # "all +" and "all -" are as extreme, so the exact two-sided p is 2 / 2**5.
    base = np.zeros(5)
    out = paired_comparison(base, sign * np.arange(1.0, 6.0))
    assert out["p_value"] == pytest.approx(2 / 2**5) == 0.0625
    assert out["mean_diff"] == pytest.approx(sign * 3.0)


def test_paired_all_zero_differences_have_no_p():
    out = paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert out == {"n": 3, "mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": None}


def test_paired_drops_pairs_with_a_missing_side():
    out = paired_comparison([1.0, math.nan, 3.0, 4.0, 0.0], [2.0, 5.0, math.inf, 7.0, 4.0])
    # kept pairs: (1, 2), (4, 7), (0, 4) -> d = [1, 3, 4]
    assert out["n"] == 3
    assert out["mean_diff"] == pytest.approx(8.0 / 3.0)
    assert out["p_value"] == pytest.approx(stats.wilcoxon([1.0, 3.0, 4.0]).pvalue)


def test_paired_too_few_pairs():
    one = paired_comparison([1.0, math.nan], [2.0, 3.0])
    assert one == {"n": 1, "mean_diff": 1.0, "ci_low": None, "ci_high": None, "p_value": None}
    none = paired_comparison([math.nan], [1.0])
    assert none == {"n": 0, "mean_diff": None, "ci_low": None, "ci_high": None, "p_value": None}


def test_paired_rejects_misaligned_inputs():
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------- holm


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_none_preserved_and_not_counted():
    # m = 2: 0.01*2 = 0.02, 0.04*1 = 0.04 (m = 3 would give 0.03 and 0.08)
    out = holm([0.01, None, 0.04, None])
    assert out[1] is None and out[3] is None
    assert [out[0], out[2]] == pytest.approx([0.02, 0.04])


def test_holm_capped_at_one_and_monotone():
    # sorted: 0.02*3 = 0.06, 0.6*2 = 1.2 -> cap 1.0, 0.7*1 = 0.7 -> max(1.0, 0.7) = 1.0
    assert holm([0.6, 0.02, 0.7]) == pytest.approx([1.0, 0.06, 1.0])
    # sorted: 0.3*3 = 0.9, 0.45*2 = 0.9, 0.5*1 = 0.5 -> max(0.9, 0.5) = 0.9
    assert holm([0.5, 0.3, 0.45]) == pytest.approx([0.9, 0.9, 0.9])
    # 0.03*2 = 0.06, 0.04*1 = 0.04 -> lifted to 0.06 (step-down monotonicity)
    assert holm([0.04, 0.03]) == pytest.approx([0.06, 0.06])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    p = [0.002, 0.02, 0.019, 0.3, 0.04]
    adj = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(np.array(adj)[order]) >= 0)
    assert all(a >= r for a, r in zip(adj, p))


def test_holm_edge_cases():
    assert holm([]) == []
    assert holm([None, None]) == [None, None]
    assert holm([0.2]) == pytest.approx([0.2])


# ---------------------------------------------------------------- verdict


@pytest.mark.parametrize(
    ("direction", "mean_diff", "ci_low", "ci_high", "p_holm", "expected"),
    [
        ("higher", 0.5, 0.2, 0.8, 0.01, "better"),
        ("higher", -0.5, -0.8, -0.2, 0.01, "worse"),
        ("lower", -0.5, -0.8, -0.2, 0.01, "better"),
        ("lower", 0.5, 0.2, 0.8, 0.01, "worse"),
        ("higher", 0.5, 0.2, 0.8, 0.05, "no difference"),  # p not below alpha
        ("higher", 0.5, 0.2, 0.8, 0.2, "no difference"),
        ("higher", 0.1, -0.1, 0.3, 0.01, "no difference"),  # interval covers 0
        ("lower", 0.2, 0.0, 0.4, 0.01, "no difference"),  # interval touches 0
        ("higher", 0.0, 0.0, 0.0, None, "no difference"),  # all-zero differences
        ("higher", 0.5, None, None, None, "n/a"),  # one job only
        ("lower", None, None, None, None, "n/a"),
        ("higher", math.nan, 0.2, 0.8, 0.01, "n/a"),
        ("none", 0.5, 0.2, 0.8, 0.001, "not ranked"),
        ("none", None, None, None, None, "not ranked"),
    ],
)
def test_verdict_table(direction, mean_diff, ci_low, ci_high, p_holm, expected):
    assert verdict(direction, mean_diff, ci_low, ci_high, p_holm) == expected


def test_verdict_alpha_is_used():
    assert verdict("higher", 0.5, 0.2, 0.8, 0.03, alpha=0.01) == "no difference"
    assert verdict("higher", 0.5, 0.2, 0.8, 0.03, alpha=0.05) == "better"


def test_verdict_rejects_unknown_direction():
    with pytest.raises(ValueError):
        verdict("up", 0.5, 0.2, 0.8, 0.01)


def test_finite_median_skips_failed_scores():
    assert finite_median([1.0, math.nan, 3.0, 10.0, math.inf]) == 3.0      # the median of 1, 3, 10
    assert finite_median([4.0, 1.0]) == 2.5
    assert finite_median([math.nan]) is None and finite_median([]) is None
