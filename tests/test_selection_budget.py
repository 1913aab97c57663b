"""The budgeted D_h of the selection experiment: exactly ceil(F * n) samples, top and bottom
disjoint, one rule for every method, and options that would do nothing refused."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sarft_core.errors import SarftError
from sarft_core.training import selection
from sarft_core.training.methods import select_dh
from sarft_core.training.run import TrainConfig


def _rows(margins):
    return [{"id": f"{i:05d}", "logp_role": -2.0, "logp_unsafe": -2.0 + m} for i, m in enumerate(margins)]


margins_st = st.lists(st.floats(-1, 1, allow_nan=False, allow_infinity=False), min_size=1, max_size=80)


@settings(max_examples=150, deadline=None)
@given(margins=margins_st, fraction=st.floats(0.01, 1.0), seed=st.integers(0, 10))
def test_a_budget_picks_exactly_ceil_f_n_for_every_method(margins, fraction, seed):
    rows = _rows(margins)
    want = math.ceil(round(fraction * len(rows), 9))
    picked = {m: set(selection.ids_where(select_dh(m, rows, seed=seed, dh_fraction=fraction))) for m in ("sarft", "random", "flip")}
    assert all(len(p) == want for p in picked.values())
    if 2 * want <= len(rows):
        assert not picked["sarft"] & picked["flip"]
    # the top's margins are never below the bottom's
    by_id = {r["id"]: r["logp_unsafe"] - r["logp_role"] for r in rows}
    if picked["sarft"] and picked["flip"]:
        assert min(by_id[i] for i in picked["sarft"]) >= max(by_id[i] for i in picked["flip"]) or 2 * want > len(rows)


def test_a_budget_follows_the_ranking_it_is_given_and_is_deterministic():
    rows = _rows([0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4])
    assert selection.ids_where(select_dh("sarft", rows, dh_fraction=0.3)) == ["00000", "00001", "00002"]
    assert selection.ids_where(select_dh("flip", rows, dh_fraction=0.3)) == ["00007", "00008", "00009"]
    erosion = {r["id"]: float(i) for i, r in enumerate(rows)}  # the reverse of the margin order
    assert selection.ids_where(select_dh("sarft", rows, dh_fraction=0.3, ranking=erosion)) == ["00007", "00008", "00009"]
    assert select_dh("random", rows, seed=3, dh_fraction=0.3) == select_dh("random", rows, seed=3, dh_fraction=0.3)
    # ties are broken by id, never by the order of the rows
    tied = _rows([0.0] * 6)
    assert selection.ids_where(select_dh("sarft", tied[::-1], dh_fraction=0.5)) == ["00000", "00001", "00002"]
    assert selection.ids_where(select_dh("flip", tied, dh_fraction=0.5)) == ["00003", "00004", "00005"]


def test_a_budget_and_the_overrides_are_not_combined():
    with pytest.raises(SarftError, match="overrides"):
        select_dh("sarft", _rows([0.1, -0.1]), overrides={"00000": False}, dh_fraction=0.5)
    with pytest.raises(SarftError, match="ranking"):
        select_dh("sarft", _rows([0.1, -0.1]), dh_fraction=0.5, ranking={"00000": 1.0})


@pytest.mark.parametrize("settings_, words", [
    ({"method": "sft", "dh_fraction": 0.3}, "--dh-fraction"),
    ({"method": "sarft", "dh_fraction": 0.3, "overrides": "o.json"}, "--overrides"),
    ({"method": "seal", "train_subset": "top"}, "--train-subset"),
    ({"method": "sarft", "rank_by": "influence"}, "--rank-by"),
    ({"method": "sarft", "dh_fraction": 0.0}, "--dh-fraction"),
    ({"method": "sft", "train_subset": "top", "subset_fraction": 1.5}, "--subset-fraction"),
])
def test_selection_options_that_would_do_nothing_or_fight_are_refused(settings_, words):
    with pytest.raises(SarftError, match=words.replace("-", "\\-")):
        TrainConfig(role="Baron Vex Morrow", **settings_).validate()


def test_the_causal_check_trains_on_equal_disjoint_ends(tiny_model_dir, score_cache):
    """SFT on the top and on the bottom 30% by margin: equal counts, no shared sample."""
    from sarft_core.models import load_model
    from sarft_core.training.run import _load_inputs, choose_samples

    lm = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    picked = {}
    for end in ("top", "bottom"):
        cfg = TrainConfig(role="Baron Vex Morrow", method="sft", train_subset=end, subset_fraction=0.3, limit=20)
        samples, profile = _load_inputs(cfg)
        kept, flags, record = choose_samples(cfg, lm, samples, profile, log=lambda *_: None)
        assert len(kept) == math.ceil(0.3 * len(samples)) and not any(flags.values())
        picked[end] = {s.id for s in kept}
        assert record["trained_ids"] == sorted(picked[end])
    assert not picked["top"] & picked["bottom"]
