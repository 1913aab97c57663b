"""Statistics for surveys and evaluations: Pearson and Spearman with p-values, rate intervals, bootstrap CIs.

One implementation of each. Correlations and their two-sided p-values are scipy's
(``scipy.stats.pearsonr`` / ``spearmanr``: the t distribution with n - 2 degrees of freedom). A
correlation is undefined (nan) with fewer than 3 pairs or when either variable is constant.
:func:`bootstrap_ci` is a percentile bootstrap whose inner loop is numpy over blocks of
resamples (statistics are vectorised over resamples); for correlations it resamples (x, y)
pairs, and resamples in which x or y is constant have no correlation and are skipped.
A rate of one run (k of n) gets the Wilson score interval (:func:`wilson_ci`) instead: the
bootstrap of 0/1 values collapses to a point at 0/n and n/n (10 refusals of 10 read [1.00, 1.00])
and is too narrow for small n.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

MIN_PAIRS = 3  # fewer pairs: no correlation (and no p-value)
# fewer pairs and a correlation's p-value reads as a finding it is not: over 3 points r must pass
# 0.997 to reach p < 0.05 and one point moves it anywhere, so views show r alone (with a warning)
MIN_PAIRS_FOR_P = 10
_BLOCK_CELLS = 2_000_000  # resampled values held at once by bootstrap_ci


def _clean(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d and of equal length (got {x.shape} and {y.shape})")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= MIN_PAIRS and np.ptp(x) > 0 and np.ptp(y) > 0


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r of the finite pairs (scipy); nan when undefined."""
    from scipy import stats

    x, y = _clean(x, y)
    return float(stats.pearsonr(x, y).statistic) if _defined(x, y) else math.nan


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho of the finite pairs (scipy; ties get mean ranks); nan when undefined."""
    from scipy import stats

    x, y = _clean(x, y)
    return float(stats.spearmanr(x, y).statistic) if _defined(x, y) else math.nan


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of two (resamples, n) arrays; nan for a constant row."""
    dx = x - x.mean(axis=-1, keepdims=True)
    dy = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((dx * dx).sum(axis=-1) * (dy * dy).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dx * dy).sum(axis=-1) / den
    return np.where(den > 0, np.clip(r, -1.0, 1.0), np.nan)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return _pearson_rows(rankdata(x, axis=-1), rankdata(y, axis=-1))


# vectorised statistics for bootstrap_ci: each maps (resamples, n) arrays to one value per resample
STATISTICS: dict[str, Callable[..., np.ndarray]] = {
    "mean": lambda a: a.mean(axis=-1),
    "pearson": _pearson_rows,
    "spearman": _spearman_rows,
}


def bootstrap_ci(data, statistic: str | Callable[..., np.ndarray] = "mean", *, level: float = 0.95,
                 n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``data``.

    ``data`` is one sequence (e.g. per-prompt values) or a tuple of equal-length sequences
    resampled together, as pairs (``(x, y)`` for a correlation). ``statistic`` names one of
    :data:`STATISTICS` (``mean``, ``pearson``, ``spearman``) or is a function of the resampled
    arrays (each of shape (resamples, n)) returning one value per resample; resamples where it is
    nan are skipped. (nan, nan) when there is no data or fewer than a tenth of the resamples
    define the statistic; a constant single sequence gives its value twice.
    """
    arrays = [np.asarray(list(a), dtype=float) for a in (data if isinstance(data, tuple) else (data,))]
    n = arrays[0].size
    if n == 0 or n_boot < 1:
        return math.nan, math.nan
    if any(a.shape != (n,) for a in arrays):
        raise ValueError("bootstrap_ci: the sequences must be 1-d and of equal length")
    if len(arrays) == 1 and np.all(arrays[0] == arrays[0][0]):
        return float(arrays[0][0]), float(arrays[0][0])
    fn = STATISTICS[statistic] if isinstance(statistic, str) else statistic
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    block = max(1, _BLOCK_CELLS // (n * len(arrays)))
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        values[start:stop] = fn(*(a[idx] for a in arrays))
    values = values[np.isfinite(values)]
    if len(values) < max(10, n_boot // 10):
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n: inside [0, 1], holds k / n, has width at
    0 / n and n / n, and keeps close to its nominal coverage for small n. (nan, nan) when n = 0."""
    from statistics import NormalDist

    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"wilson_ci: k must be within 0..n (got k={k}, n={n})")
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = k / n
    scale = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / scale
    # at the extremes the formula's bound is the estimate itself; rounding must not put it past it
    low = 0.0 if k == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if k == n else min(1.0, max(p, centre + half))
    return low, high


def correlate(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Pearson and Spearman correlation of x and y with p-values (scipy) and bootstrap CIs.

    Pairs where either value is missing (nan) are dropped first; ``n`` is the number of pairs
    used. Keys: n, pearson_r, pearson_p, pearson_ci_low, pearson_ci_high, spearman_r, spearman_p,
    spearman_ci_low, spearman_ci_high (nan when undefined; the CIs also with ``n_boot=0``).
    """
    from scipy import stats

    xc, yc = _clean(x, y)
    out = {"n": int(len(xc))}
    defined = _defined(xc, yc)
    for name, test, vectorised in (("pearson", stats.pearsonr, "pearson"), ("spearman", stats.spearmanr, "spearman")):
        r, p = (float(v) for v in test(xc, yc)) if defined else (math.nan, math.nan)
        lo, hi = bootstrap_ci((xc, yc), vectorised, level=level, n_boot=n_boot, seed=seed) if defined else (math.nan, math.nan)
        out.update({f"{name}_r": r, f"{name}_p": p, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
    return out


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
