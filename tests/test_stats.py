"""Correlation statistics (one implementation, on scipy) and the one bootstrap interval."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from sarft_core import plots
from sarft_core.stats import bootstrap_ci, correlate, pearson_r, spearman_rho

# Anscombe's first quartet: r = 0.816
ANS_X = [10, 8, 13, 9, 11, 14, 6, 4, 12, 7, 5]
ANS_Y = [8.04, 6.95, 7.58, 8.81, 8.33, 9.96, 7.24, 4.26, 10.84, 4.82, 5.68]
KEYS = {"n", "pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high", "spearman_r", "spearman_p", "spearman_ci_low", "spearman_ci_high"}


def test_pearson_matches_scipy_on_anscombe():
    res = correlate(ANS_X, ANS_Y, n_boot=500)
    ref = sps.pearsonr(ANS_X, ANS_Y)
    assert set(res) == KEYS
    assert res["pearson_r"] == pytest.approx(0.81642, abs=1e-4)
    assert res["pearson_r"] == pytest.approx(ref.statistic, abs=1e-12)
    assert res["pearson_p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert res["pearson_ci_low"] < res["pearson_r"] < res["pearson_ci_high"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 25).astype(float)  # many ties
    y = x + rng.normal(0, 2, 25)
    ref = sps.spearmanr(x, y)
    assert spearman_rho(x, y) == pytest.approx(ref.statistic, abs=1e-12)
    res = correlate(x, y, n_boot=200)
    assert res["spearman_r"] == pytest.approx(ref.statistic, abs=1e-12)
    assert res["spearman_p"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_constant_input_and_too_few_pairs_give_nan_not_error():
    for x, y in (([1, 1, 1, 1], [1, 2, 3, 4]), ([1, 2], [3, 4])):
        res = correlate(x, y, n_boot=100)
        assert set(res) == KEYS and all(math.isnan(v) for k, v in res.items() if k != "n")
        assert math.isnan(pearson_r(x, y)) and math.isnan(spearman_rho(x, y))


def test_missing_values_are_dropped_pairwise():
    res = correlate([1, 2, float("nan"), 4, 5], [2, 4, 6, float("nan"), 10], n_boot=100)
    assert res["n"] == 3 and res["pearson_r"] == pytest.approx(1.0)


def test_the_plots_and_the_survey_read_the_same_numbers():
    """plots.correlations (the report's table, plot titles) is correlate without intervals."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    full, bare = correlate(x, y), plots.correlations(x, y)
    assert set(bare) == KEYS and math.isnan(bare["pearson_ci_low"]) and math.isnan(bare["spearman_ci_high"])
    assert all(bare[k] == full[k] for k in ("n", "pearson_r", "pearson_p", "spearman_r", "spearman_p"))


def test_bootstrap_ci_of_a_correlation_matches_scipy_percentile():
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = 0.6 * x + rng.normal(size=40)
    lo, hi = bootstrap_ci((x, y), "pearson", n_boot=2000, seed=7)
    r = pearson_r(x, y)
    assert lo < r < hi
    ref = sps.bootstrap((x, y), lambda a, b: sps.pearsonr(a, b).statistic, paired=True, vectorized=False,
                        n_resamples=2000, method="percentile", random_state=7)
    # different random streams: the intervals agree to Monte Carlo precision
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.06)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.06)
    s_lo, s_hi = bootstrap_ci((x, y), "spearman", n_boot=2000, seed=7)
    s_ref = sps.bootstrap((x, y), lambda a, b: sps.spearmanr(a, b).statistic, paired=True, vectorized=False,
                          n_resamples=2000, method="percentile", random_state=7)
    assert s_lo == pytest.approx(s_ref.confidence_interval.low, abs=0.06)
    assert s_hi == pytest.approx(s_ref.confidence_interval.high, abs=0.06)
    assert correlate(x, y, n_boot=300, seed=1) == correlate(x, y, n_boot=300, seed=1)  # deterministic per seed


def test_bootstrap_ci_of_a_mean_and_its_edges():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, size=400)
    lo, hi = bootstrap_ci(x, n_boot=2000)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - half, abs=0.02) and hi == pytest.approx(x.mean() + half, abs=0.02)
    # a custom vectorised statistic: the median over each resample
    m_lo, m_hi = bootstrap_ci(x, lambda a: np.median(a, axis=-1), n_boot=500)
    assert m_lo < np.median(x) < m_hi
    assert bootstrap_ci([]) == (math.nan, math.nan) and bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_ci(([1, 1, 1, 1], [1, 2, 3, 4]), "pearson"))  # never defined
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_ci(([1, 2, 3], [1, 2]), "pearson")


def test_wilson_ci_is_symmetric_nested_by_level_and_checks_its_input():
    from sarft_core.stats import wilson_ci

    lo, hi = wilson_ci(3, 20)
    mlo, mhi = wilson_ci(17, 20)
    assert lo == pytest.approx(1 - mhi) and hi == pytest.approx(1 - mlo)  # k of n mirrors n - k of n
    w90, w99 = wilson_ci(3, 20, level=0.90), wilson_ci(3, 20, level=0.99)
    assert w99[0] < lo < w90[0] and w90[1] < hi < w99[1]
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    with pytest.raises(ValueError):
        wilson_ci(5, 3)
