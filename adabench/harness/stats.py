"""Statistics of ``adabench compare``: bootstrap intervals, paired tests, Holm, verdicts.

Generators are compared over jobs, a job being one (prompt, seed) pair. Every job is
run by every generator, so per-job scores are paired: the unit of resampling and of
testing is the job, never the frame or the window.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Optional

import numpy as np
from scipy import stats

Interval = tuple[Optional[float], Optional[float], Optional[float], int]

DIRECTIONS = ("higher", "lower", "none")


def _check_confidence(confidence: float) -> None:
    """Reject a confidence level outside (0, 1): it has no interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _finite(values) -> np.ndarray:
    """Flat float array of the finite entries: NaN / inf mark a failed or missing score."""
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _bracket(mean: float, low: float, high: float) -> tuple[float, float]:
    """Clip the interval so it contains the mean (floating error can break that)."""
    return min(float(low), mean), max(float(high), mean)


def finite_median(values) -> Optional[float]:
    """Median of the finite values (None if there are none): what one stalled job cannot move."""
    x = _finite(values)
    return float(np.median(x)) if x.size else None


def bootstrap_mean_ci(
    values, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """Mean of the finite values and its percentile bootstrap interval: (mean, low, high, n).

    One value gives no interval (None, None); no values give no mean either. Identical
    values give the degenerate interval (x, x) directly, since scipy warns on them.
    Deterministic for a given ``seed``.
    """
    _check_confidence(confidence)
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return None, None, None, 0
    mean = float(np.mean(x))
    if n == 1:
        return mean, None, None, 1
    if np.all(x == x[0]):
        value = float(x[0])
        return value, value, value, n
    res = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    low, high = _bracket(mean, res.confidence_interval.low, res.confidence_interval.high)
    return mean, low, high, n


def _pad(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """[jobs, windows] float matrix, ragged rows padded and non-finite entries set to NaN."""
    width = max((len(r) for r in rows), default=0)
    mat = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        mat[i, : len(row)] = np.asarray(row, dtype=float)
    mat[~np.isfinite(mat)] = np.nan
    return mat


def _resample_counts(n_jobs: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[n_resamples, n_jobs] times each job is drawn, from indices drawn with replacement."""
    idx = rng.integers(0, n_jobs, size=(n_resamples, n_jobs))
    flat = idx + n_jobs * np.arange(n_resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n_jobs).reshape(n_resamples, n_jobs)


def bootstrap_series_ci(
    rows: Sequence[Sequence[float]],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, list]:
    """Per-window mean over jobs and a percentile bootstrap interval resampling whole jobs.

    ``rows`` holds one series per job (ragged allowed, NaN = missing). Jobs are drawn
    jointly for all windows, so each resample is one plausible set of jobs. A resample
    whose drawn jobs are all missing at a window is left out of that window's
    percentiles. Returns lists "mean", "ci_low", "ci_high", "n", one entry per window.
    """
    _check_confidence(confidence)
    mat = _pad(rows)
    n_jobs, n_windows = mat.shape
    finite = np.isfinite(mat)
    counts = finite.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice" on all-NaN windows
        means = np.nanmean(mat, axis=0) if n_jobs else np.full(n_windows, np.nan)
    lows = np.full(n_windows, np.nan)
    highs = np.full(n_windows, np.nan)
    if n_jobs >= 2 and np.any(counts >= 2):
        # Resampled nan-mean per window = weighted sum / weighted count, weights = draw counts.
        weights = _resample_counts(n_jobs, n_resamples, np.random.default_rng(seed)).astype(float)
        sums = weights @ np.where(finite, mat, 0.0)
        taken = weights @ finite.astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 and all-NaN columns
            boot = sums / taken
            tail = 100.0 * (1.0 - confidence) / 2.0
            lows, highs = np.nanpercentile(boot, [tail, 100.0 - tail], axis=0)
    out: dict[str, list] = {"mean": [], "ci_low": [], "ci_high": [], "n": []}
    for w in range(n_windows):
        n = int(counts[w])
        mean = float(means[w]) if n else None
        low = high = None
        if n >= 2 and np.isfinite(lows[w]) and np.isfinite(highs[w]):
            low, high = _bracket(mean, lows[w], highs[w])
        out["mean"].append(mean)
        out["ci_low"].append(low)
        out["ci_high"].append(high)
        out["n"].append(n)
    return out


def paired_comparison(
    baseline, other, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """Compare two generators job by job: mean of ``other - baseline``, its interval, Wilcoxon p.

    Pairs where either side is missing are dropped. The p-value is the two-sided
    Wilcoxon signed-rank test; it is None with fewer than two pairs or when every
    difference is zero (the test has nothing to rank then).
    """
    a = np.asarray(baseline, dtype=float).ravel()
    b = np.asarray(other, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"baseline and other must be aligned by job: {a.size} vs {b.size} values")
    keep = np.isfinite(a) & np.isfinite(b)
    d = b[keep] - a[keep]
    mean, low, high, n = bootstrap_mean_ci(d, confidence, n_resamples, seed)
    return {"n": n, "mean_diff": mean, "ci_low": low, "ci_high": high, "p_value": _wilcoxon_p(d)}


def _wilcoxon_p(d: np.ndarray) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p of the differences, None where the test is undefined.

    All-zero differences are caught before scipy: older scipy raises ValueError on them,
    newer scipy returns a meaningless p with a RuntimeWarning.
    """
    if d.size < 2 or np.all(d == 0):
        return None
    try:
        p = float(stats.wilcoxon(d).pvalue)
    except ValueError:
        return None
    return p if np.isfinite(p) else None


def holm(p_values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm-Bonferroni step-down adjusted p-values, in input order.

    None (or NaN) entries stay None and do not count in the family size m. The i-th
    smallest p becomes max over j <= i of min(1, (m - j + 1) * p_(j)).
    """
    present = [i for i, p in enumerate(p_values) if p is not None and not np.isnan(p)]
    order = sorted(present, key=lambda i: p_values[i])
    m = len(order)
    adjusted: list[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def _missing(x: Optional[float]) -> bool:
    """True for None or NaN."""
    return x is None or not np.isfinite(x)


def verdict(
    direction: str,
    mean_diff: Optional[float],
    ci_low: Optional[float],
    ci_high: Optional[float],
    p_holm: Optional[float],
    alpha: float = 0.05,
) -> str:
    """Call ``other`` better, worse or no different from the baseline on one metric.

    Significant only when the Holm-adjusted p is below ``alpha`` AND the bootstrap
    interval excludes 0; the two must agree so neither test alone decides. Metrics with
    direction "none" are reported but never ranked.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
    if direction == "none":
        return "not ranked"
    if _missing(mean_diff) or _missing(ci_low) or _missing(ci_high):
        return "n/a"
    if _missing(p_holm) or p_holm >= alpha or ci_low <= 0.0 <= ci_high:
        return "no difference"
    increased = ci_low > 0.0
    return "better" if increased == (direction == "higher") else "worse"
