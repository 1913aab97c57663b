"""How sure a flag is: the block-bootstrap error of the margin and the three-state verdict, as
properties (never one model's numbers)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sarft_core.flags import VERDICTS, block_length, margin_se, verdict, verdict_counts, verdicts, z_value

finite = st.floats(-5, 5, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(margin=finite, se=st.floats(0, 3, allow_nan=False), tau=st.floats(-1, 1, allow_nan=False))
def test_the_three_states_follow_the_margin_and_its_error(margin, se, tau):
    v = verdict(margin, se, tau)
    reach = z_value(0.95) * se
    assert v in VERDICTS
    assert (v == "flagged") == (margin - tau > reach)
    assert (v == "kept") == (margin - tau < -reach)
    # a confident verdict always agrees with the published flag (margin > tau)
    if v != "uncertain":
        assert (v == "flagged") == (margin > tau)


@settings(max_examples=100, deadline=None)
@given(margin=finite, se=st.floats(0.001, 3, allow_nan=False), tau=st.floats(-1, 1, allow_nan=False))
def test_a_wider_error_or_a_higher_confidence_is_never_more_sure(margin, se, tau):
    sure = lambda v: v != "uncertain"  # noqa: E731
    assert sure(verdict(margin, se * 2, tau)) <= sure(verdict(margin, se, tau))
    assert sure(verdict(margin, se, tau, confidence=0.99)) <= sure(verdict(margin, se, tau, confidence=0.9))


def test_an_unknown_error_is_uncertain_never_confident():
    assert verdict(5.0, math.nan) == "uncertain"
    assert verdict(math.nan, 0.1) == "uncertain"
    assert margin_se([0.3]) != margin_se([0.3])  # one token: NaN, nothing to resample
    table = pd.DataFrame({"logp_role": [-2.0, -1.0], "logp_unsafe": [-1.0, -2.0]})  # scored before errors existed
    assert list(verdicts(table)) == ["uncertain", "uncertain"]


def test_the_bootstrap_error_is_deterministic_and_scales_like_a_mean():
    rng = np.random.default_rng(1)
    d = rng.normal(0.0, 1.0, 400)
    assert margin_se(d) == margin_se(d)
    # i.i.d. tokens: about sd / sqrt(n)
    assert margin_se(d) == pytest.approx(1.0 / math.sqrt(400), rel=0.35)
    # four times the tokens, about half the error
    assert margin_se(np.tile(rng.normal(0, 1, 1600), 1)) < margin_se(d)
    # a constant ratio has no spread; the sum's error is n times the mean's
    assert margin_se([0.2] * 50) == pytest.approx(0.0, abs=1e-12)
    assert margin_se(d, "sum") == pytest.approx(400 * margin_se(d))


def test_correlated_tokens_widen_the_error_as_they_should():
    """A phrase moves together: blocks of equal ratios carry less information than as many
    independent tokens, and the block bootstrap says so where the i.i.d. formula would not."""
    rng = np.random.default_rng(2)
    independent = rng.normal(0, 1, 512)
    runs = np.repeat(rng.normal(0, 1, 64), 8)  # 64 phrases of 8 equal tokens
    assert margin_se(runs) > 1.5 * margin_se(independent)
    assert block_length(512) == 8 and block_length(1) == 1


def test_a_flag_carried_by_one_token_is_uncertain_and_one_every_token_carries_is_sure():
    one_token = [0.0] * 39 + [4.0]  # mean 0.1, all of it from one token
    every_token = [0.1 + 0.01 * ((i % 3) - 1) for i in range(40)]  # mean 0.1, every token leans the same way
    assert verdict(np.mean(one_token), margin_se(one_token)) == "uncertain"
    assert verdict(np.mean(every_token), margin_se(every_token)) == "flagged"


def test_the_counts_name_every_state():
    assert verdict_counts(["flagged", "kept", "kept"]) == {"flagged": 1, "uncertain": 0, "kept": 2}
