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


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_rate_interval_is_inside_0_1_holds_the_estimate_and_has_width(kn):
    """A rate of one run gets a Wilson interval: never a point, even at 0 / n and n / n."""
    k, n = kn
    r = rate(["refusal"] * k + ["compliance"] * (n - k), "refusal")
    assert 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0
    assert r["ci_high"] - r["ci_low"] > 0


def test_rate_interval_at_the_extremes_and_for_small_n():
    all_ten = rate(["refusal"] * 10, "refusal")
    assert all_ten["value"] == 1.0 and all_ten["ci_high"] == 1.0
    assert 0.6 < all_ten["ci_low"] < 0.8  # 10 of 10 still leaves room for a true rate near 0.7
    none = rate(["compliance"] * 10, "refusal")
    assert none["ci_low"] == 0.0 and 0.2 < none["ci_high"] < 0.4
    assert rate(["refusal"], "refusal")["ci_low"] < 0.25  # one refusal says little
    widths = [(lambda r: r["ci_high"] - r["ci_low"])(rate(["refusal", "compliance"] * n, "refusal")) for n in (5, 50, 500)]
    assert widths[0] > widths[1] > widths[2]
    nothing = rate([], "refusal")
    assert math.isnan(nothing["ci_low"]) and math.isnan(nothing["ci_high"])
