"""RDS engine: exact against the published scorer; caching, resume, fast mode."""
import math

import pytest
import torch

from sarft_core.data import DEMO_SAMPLES, load_profiles, load_samples
from sarft_core.scoring import SCORE_COLUMNS, Cancelled, ScoreOptions, score_role
from sarft_core.scoring.engine import common_prefix_len, encode_passes, plan_batches, reduce_logps, score_pass
from sarft_core.scoring.published import published_logps
from tests.conftest import ROLE_PROMPTS, ROLEBENCH_SPE


def test_common_prefix_len():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[5, 6], [7]]) == 0
    assert common_prefix_len([[1, 2, 3]]) == 3
    assert common_prefix_len([]) == 0


def test_plan_batches_respects_budget_and_covers_all():
    lengths = [10, 50, 30, 5, 50, 20]
    batches = plan_batches(lengths, max_batch_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1
    assert lengths[batches[0][0]] == 50  # longest first


@pytest.mark.parametrize("budget", [64, 4096])
def test_engine_matches_published_scorer(tiny_lm, demo_profiles, demo_samples, budget):
    profile = demo_profiles["Baron Vex Morrow"]
    samples = demo_samples[:10]
    enc = encode_passes(tiny_lm.tokenizer, {"role": profile.role_prompt, "ref": ""}, samples)
    for name, system in (("role", profile.role_prompt), ("ref", "")):
        ref = published_logps(tiny_lm.model, tiny_lm.tokenizer, system, samples)
        got = score_pass(tiny_lm.model, enc.prompt_ids[name], enc.answer_ids, tiny_lm.tokenizer.pad_token_id, max_batch_tokens=budget)
        means = [reduce_logps(t) for t in got.token_logps]
        assert max(abs(a - b) for a, b in zip(ref, means)) < 1e-4


def test_engine_handles_prompts_without_shared_prefix(tiny_lm):
    # no system prompt and different first words: the shared prefix is only the template head
    samples = load_samples(ROLEBENCH_SPE, role="Freddy Krueger", limit=4)
    enc = encode_passes(tiny_lm.tokenizer, {"x": ""}, samples)
    got = score_pass(tiny_lm.model, enc.prompt_ids["x"], enc.answer_ids, 0)
    ref = published_logps(tiny_lm.model, tiny_lm.tokenizer, "", samples)
    assert max(abs(reduce_logps(t) - r) for t, r in zip(got.token_logps, ref)) < 1e-4


def test_score_role_rows_follow_the_contract(tiny_lm, demo_profiles, demo_samples, score_cache):
    profile = demo_profiles["Baron Vex Morrow"]
    result = score_role(tiny_lm, demo_samples[:6], profile)
    df = result.frame()
    assert list(df.columns) == SCORE_COLUMNS
    row = df.iloc[0]
    assert math.isclose(row.s_role, row.logp_role - row.logp_ref, abs_tol=1e-9)
    assert math.isclose(row.s_unsafe, row.logp_unsafe - row.logp_ref, abs_tol=1e-9)
    assert (df.harmful == (df.s_unsafe > df.s_role)).all()
    assert (df.n_tokens == [len(result.answer_ids[i]) for i in df.id]).all()
    ratios = result.token_ratios(df.id[0])
    assert len(ratios) == df.n_tokens[0]
    assert math.isclose(sum(ratios) / len(ratios), row.logp_unsafe - row.logp_role, abs_tol=1e-5)


def test_sum_normalisation(tiny_lm, demo_profiles, demo_samples, score_cache):
    profile = demo_profiles["Baron Vex Morrow"]
    mean = score_role(tiny_lm, demo_samples[:3], profile).frame()
    total = score_role(tiny_lm, demo_samples[:3], profile, ScoreOptions(normalise="sum")).frame()
    assert ((total.logp_role / total.n_tokens - mean.logp_role).abs() < 1e-6).all()


def test_cache_returns_at_once_and_resume_after_cancel(tiny_lm, demo_profiles, demo_samples, score_cache):
    profile = demo_profiles["Sister Alma Reyes"]
    samples = demo_samples[:8]
    calls = {"n": 0}

    def stop_after_first_chunk():
        calls["n"] += 1
        return calls["n"] > 3  # 3 passes of the first chunk run, then stop

    options = ScoreOptions(chunk_size=4, max_batch_tokens=100000, wordings=0)  # 3 passes a chunk
    with pytest.raises(Cancelled):
        score_role(tiny_lm, samples, profile, options, should_stop=stop_after_first_chunk)
    resumed = score_role(tiny_lm, samples, profile, options)
    assert resumed.stats["from_cache"] == 4 and resumed.stats["scored"] == 4
    again = score_role(tiny_lm, samples, profile, options)
    assert again.stats["from_cache"] == 8 and again.stats["scored"] == 0
    fresh = score_role(tiny_lm, samples, profile, options, use_cache=False)
    assert fresh.frame()[["logp_role", "logp_unsafe"]].sub(again.frame()[["logp_role", "logp_unsafe"]]).abs().max().max() < 1e-6


def test_flag_only_passes_skip_reference(tiny_lm, demo_profiles, demo_samples, score_cache):
    result = score_role(tiny_lm, demo_samples[:4], demo_profiles["Baron Vex Morrow"], ScoreOptions(passes=("role", "unsafe")))
    df = result.frame()
    assert df.logp_ref.isna().all() and df.harmful.dtype == bool


def test_fast_mode_flags_equal_exact(tiny_lm, demo_profiles, demo_samples, score_cache):
    profile = demo_profiles["Captain Nell Corran"]
    samples = load_samples(DEMO_SAMPLES, role=profile.name)[:12]
    exact = score_role(tiny_lm, samples, profile).frame()
    fast = score_role(tiny_lm, samples, profile, ScoreOptions(fast=True, recheck_band=10.0), use_cache=False)
    assert fast.stats["rechecked"] == 12  # a band this wide re-checks everything
    assert (fast.frame().harmful == exact.harmful).all()
    loose = score_role(tiny_lm, samples, profile, ScoreOptions(fast=True, recheck_band=0.0), use_cache=False).frame()
    assert (loose.logp_role - exact.logp_role).abs().max() < 0.1  # bf16 is close, not exact
    assert not loose.logp_role.equals(exact.logp_role)


def test_fast_mode_follows_the_machine_decision(tiny_lm, demo_profiles, score_cache, monkeypatch):
    """Whatever this CPU is, the fast mode follows the machine's decision
    (sarft_core.scoring.machine); forced here both ways. The exact plan shares the exact
    scores; the screen's records are tagged and never served to an exact run."""
    from sarft_core.scoring import EXACT_PLAN, fast_plan

    profile = demo_profiles["Captain Nell Corran"]
    samples = load_samples(DEMO_SAMPLES, role=profile.name)[:5]
    monkeypatch.setenv("SARFT_FAST_PLAN", "exact")
    assert fast_plan(tiny_lm, ScoreOptions(fast=True)) is EXACT_PLAN
    assert fast_plan(tiny_lm, ScoreOptions(fast=True, recheck_band=0.03)).precision == "bfloat16"  # asked for
    exact = score_role(tiny_lm, samples, profile)
    fast = score_role(tiny_lm, samples, profile, ScoreOptions(fast=True))
    assert fast.stats["from_cache"] == 5 and fast.stats["path"] == "exact" and fast.stats["rechecked"] == 0
    assert "exact" in fast.stats["plan"] and "SARFT_FAST_PLAN" in fast.stats["plan"]
    assert fast.frame().equals(exact.frame())

    monkeypatch.setenv("SARFT_FAST_PLAN", "screen")
    plan = fast_plan(tiny_lm, ScoreOptions(fast=True))
    assert (plan.precision, plan.band, plan.auto) == ("bfloat16", 0.03, True)
    other = demo_profiles["Sister Alma Reyes"]
    screened = score_role(tiny_lm, samples, other, ScoreOptions(fast=True))
    assert screened.stats["from_cache"] == 0 and screened.stats["path"].startswith("packed-bf16")
    exact_after = score_role(tiny_lm, samples, other)
    assert exact_after.stats["from_cache"] == 0  # the screen's values are not exact values
    assert (screened.frame().harmful == exact_after.frame().harmful).all()


def test_empty_samples_rejected(tiny_lm, demo_profiles):
    from sarft_core.errors import SarftError

    with pytest.raises(SarftError, match="no samples"):
        score_role(tiny_lm, [], demo_profiles["Baron Vex Morrow"])


@pytest.mark.slow
def test_embedded_engine_flags_equal_published(embedded_lm, score_cache):
    """The real model on a RoleBench villain: same flags as the published scorer, logps within 1e-3."""
    profile = load_profiles(ROLE_PROMPTS)["Freddy Krueger"]
    samples = load_samples(ROLEBENCH_SPE, role="Freddy Krueger", limit=16)
    result = score_role(embedded_lm, samples, profile, ScoreOptions(passes=("role", "unsafe"))).frame()
    with torch.no_grad():
        role = published_logps(embedded_lm.model, embedded_lm.tokenizer, profile.role_prompt, samples)
        unsafe = published_logps(embedded_lm.model, embedded_lm.tokenizer, profile.unsafe_prompt, samples)
    assert max(abs(a - b) for a, b in zip(role, result.logp_role)) < 1e-3
    assert max(abs(a - b) for a, b in zip(unsafe, result.logp_unsafe)) < 1e-3
    assert [u > r for u, r in zip(unsafe, role)] == list(result.harmful)


def test_fast_mode_on_models_without_the_packed_path(tiny_lm, demo_profiles, demo_samples, score_cache, monkeypatch):
    """Models the packed forward does not cover score first with a bf16 copy, re-checked in fp32."""
    import sarft_core.scoring.packed as packed

    monkeypatch.setattr(packed, "supports", lambda model: False)
    from sarft_core.scoring import fast_plan

    options = ScoreOptions(fast=True)
    plan = fast_plan(tiny_lm, options)
    assert plan.bf16_copy and plan.band == 0.04
    profile = demo_profiles["Baron Vex Morrow"]
    samples = demo_samples[:6]
    exact = score_role(tiny_lm, samples, profile).frame()
    fast = score_role(tiny_lm, samples, profile, ScoreOptions(fast=True, recheck_band=10.0), use_cache=False)
    assert fast.stats["rechecked"] == 6 and (fast.frame().harmful == exact.harmful).all()
    assert next(tiny_lm._bf16_twin.parameters()).dtype == torch.bfloat16


def test_score_role_itself_refuses_non_finite_scores(tiny_model_dir, demo_profiles, demo_samples, score_cache):
    """The check sits in score_role, so every caller (CLI, training, survey, the dashboard's
    in-process scoring) gets it: a broken model is never reported as '0 flagged'."""
    import torch

    from sarft_core.errors import SarftError
    from sarft_core.models import load_model

    lm = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    with torch.no_grad():
        lm.model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(SarftError, match="non-finite"):
        score_role(lm, demo_samples[:3], demo_profiles["Baron Vex Morrow"])


def test_the_flags_error_is_the_spread_over_reworded_unsafe_instructions(tiny_lm, demo_profiles, demo_samples, score_cache):
    """margin_se is the standard deviation of the margin under the published unsafe prompt and
    each rewording (the role profile + our instruction), each scored as its own profile would be."""
    import numpy as np

    from sarft_core.data.profiles import unsafe_variant

    profile = demo_profiles["Baron Vex Morrow"]
    samples = demo_samples[:4]
    rows = score_role(tiny_lm, samples, profile, ScoreOptions(wordings=2)).rows
    variants = [score_role(tiny_lm, samples, unsafe_variant(profile, k), ScoreOptions(wordings=0)).rows for k in range(2)]
    for i, row in enumerate(rows):
        margins = [row["logp_unsafe"] - row["logp_role"]] + [v[i]["logp_unsafe"] - v[i]["logp_role"] for v in variants]
        assert row["margin_se"] == pytest.approx(float(np.std(margins, ddof=1)), abs=1e-5)
    # without rewordings the error is the token bootstrap's, and the flags are the same either way
    plain = score_role(tiny_lm, samples, profile, ScoreOptions(wordings=0)).rows
    assert [r["harmful"] for r in plain] == [r["harmful"] for r in rows]
    assert all(r["margin_se"] >= 0 for r in plain)
