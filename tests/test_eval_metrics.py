"""Pure evaluation math: rates with unknowns, bootstrap intervals, judge agreement."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sarft_core.evaluation.metrics import agreement, cohen_kappa, mean_with_ci, rate
from sarft_core.stats import bootstrap_ci


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=200))
def test_bootstrap_ci_covers_the_point_estimate(bits):
    lo, hi = bootstrap_ci(bits, n_boot=400)
    p = sum(bits) / len(bits)
    assert 0.0 <= lo <= p <= hi <= 1.0


def test_bootstrap_ci_narrows_with_more_data_and_is_deterministic():
    small = [1, 0] * 10
    large = [1, 0] * 500
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert hi_l - lo_l < hi_s - lo_s
    assert bootstrap_ci(small) == (lo_s, hi_s)
    assert abs((hi_l - lo_l) - 2 * 1.96 * math.sqrt(0.25 / 1000)) < 0.01  # close to the normal interval


def test_rate_leaves_unknown_out_and_counts_it():
    r = rate(["refusal", "compliance", "unknown", "refusal", "invalid"], "refusal")
    assert r["n"] == 4 and r["k"] == 2 and r["n_unknown"] == 1
    assert r["value"] == 0.5
    assert r["ci_low"] <= 0.5 <= r["ci_high"]
    empty = rate(["unknown"], "refusal")
    assert math.isnan(empty["value"]) and empty["n_unknown"] == 1


def test_mean_with_ci_ignores_nan():
    m = mean_with_ci([1.0, float("nan"), 3.0])
    assert m["value"] == 2.0 and m["n"] == 2


def test_cohen_kappa_known_values():
    truth = [True] * 20 + [False] * 30
    assert cohen_kappa(truth, truth) == 1.0
    # textbook example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> kappa = 0.4
    a = [True] * 25 + [False] * 25
    b = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    assert abs(cohen_kappa(a, b) - 0.4) < 1e-12
    stats = agreement(a, b)
    assert stats["accuracy"] == 0.7 and stats["precision"] == 20 / 30 and stats["recall"] == 20 / 25


def test_load_metrics_on_a_missing_directory_is_a_clear_error(tmp_path):
    import pytest

    from sarft_core.errors import SarftError
    from sarft_core.evaluation.results import COLUMNS, load_metrics

    with pytest.raises(SarftError, match="no such run directory"):
        load_metrics(tmp_path / "nope")
    assert list(load_metrics(tmp_path).columns) == COLUMNS  # an empty folder: an empty table
