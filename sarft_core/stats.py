"""Correlation statistics for surveys: Pearson and Spearman, p-values, bootstrap CIs.

Pure functions of two equal-length sequences. The p-values are two-sided and use the t
distribution with n - 2 degrees of freedom (exact for Pearson under bivariate normality, the usual
approximation for Spearman, as in scipy.stats). The confidence interval is a percentile bootstrap
over (x, y) pairs: resamples in which x or y is constant have no correlation and are skipped.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _clean(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d and of equal length (got {x.shape} and {y.shape})")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; nan when fewer than 2 points or either variable is constant."""
    x, y = _clean(x, y)
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(dx @ dy) / denom))


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=float)
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = _clean(x, y)
    if len(x) < 2:
        return math.nan
    return pearson_r(rankdata(x), rankdata(y))


def t_test_p(r: float, n: int) -> float:
    """Two-sided p-value of a correlation r from n points (t with n - 2 degrees of freedom)."""
    from scipy.special import betainc

    if not math.isfinite(r) or n < 3:
        return math.nan
    df = n - 2
    if abs(r) >= 1.0:
        return 0.0
    t2 = r * r * df / (1.0 - r * r)
    # P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2)
    return float(betainc(df / 2.0, 0.5, df / (df + t2)))


def bootstrap_ci(
    x: Sequence[float], y: Sequence[float], statistic, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(x, y)`` resampling pairs with replacement."""
    x, y = _clean(x, y)
    n = len(x)
    if n < 3:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = statistic(x[idx], y[idx])
        if math.isfinite(v):
            values.append(v)
    if len(values) < max(10, n_boot // 10):
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def correlate(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Pearson and Spearman correlation of x and y with p-values and bootstrap CIs.

    Pairs where either value is missing (nan) are dropped first; ``n`` is the number of pairs used.
    """
    xc, yc = _clean(x, y)
    n = len(xc)
    r = pearson_r(xc, yc)
    rho = spearman_rho(xc, yc)
    p_lo, p_hi = bootstrap_ci(xc, yc, pearson_r, n_boot, level, seed)
    s_lo, s_hi = bootstrap_ci(xc, yc, spearman_rho, n_boot, level, seed)
    return {
        "n": n,
        "pearson_r": r, "pearson_p": t_test_p(r, n), "pearson_ci_low": p_lo, "pearson_ci_high": p_hi,
        "spearman_rho": rho, "spearman_p": t_test_p(rho, n), "spearman_ci_low": s_lo, "spearman_ci_high": s_hi,
    }


def two_level_bootstrap(groups: Sequence[Sequence[float]], level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the grand mean of ``groups`` (e.g. seeds, each a list of per-prompt
    values) with a percentile interval that resamples the groups, then the values inside each.

    The mean weights every group equally. Empty groups are ignored; no groups gives nans; one
    group is resampled over its values only.
    """
    arrays = [np.asarray(g, dtype=float) for g in groups]
    arrays = [a[np.isfinite(a)] for a in arrays]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return math.nan, math.nan, math.nan
    mean = float(np.mean([a.mean() for a in arrays]))
    rng = np.random.default_rng(seed)
    k = len(arrays)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        picks = rng.integers(0, k, size=k) if k > 1 else np.zeros(1, dtype=int)
        stats[b] = np.mean([arrays[i][rng.integers(0, arrays[i].size, size=arrays[i].size)].mean() for i in picks])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return mean, float(lo), float(hi)
