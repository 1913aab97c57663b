"""The fast mode's plan comes from the machine (ISA, a short calibration, a cached decision),
and a run keeps every finished sample. Properties only: never this CPU's speed."""
import json
import math
from pathlib import Path

import pytest
import torch

import sarft_core.scoring.machine as machine
from sarft_core.data import DEMO_SAMPLES, load_samples
from sarft_core.errors import SarftError
from sarft_core.scoring import EXACT_PLAN, Cancelled, ScoreOptions, fast_plan, score_role

SPR_CPUINFO = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8

processor	: 1
vendor_id	: GenuineIntel
"""
EPYC_CPUINFO = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC 9654 96-Core Processor
flags		: fpu avx avx2 fma avx512f avx512bw avx512_bf16
"""


read_identity = machine.cpu_identity  # the real parser, kept before any test replaces it


def spr_identity():
    return read_identity(SPR_CPUINFO)


def test_cpu_identity_reads_model_and_isa():
    spr = spr_identity()
    assert spr["vendor"] == "GenuineIntel" and spr["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert spr["isa"] == ["amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"]
    epyc = read_identity(EPYC_CPUINFO)
    assert epyc["isa"] == ["avx512_bf16", "avx512f", "avx2"] and machine.best_bf16_isa(epyc["isa"]) == "avx512_bf16"
    assert machine.best_bf16_isa(["avx2"]) is None
    assert read_identity("")["isa"] == []  # no /proc/cpuinfo: no flags, no crash


def test_decision_from_the_bf16_speed_up():
    # the measurements: Sapphire Rapids (AMX) bf16 2540 vs fp32 374 GFLOP/s; EPYC 920 vs 480
    assert machine.decide(2540 / 374)[0] == "screen"
    assert machine.decide(920 / 480)[0] == "exact"
    assert machine.decide(machine.ISA_PRIOR_SPEEDUP["amx_bf16"])[0] == "screen"
    for isa in ("avx512_bf16", "avx512f", None):
        assert machine.decide(machine.ISA_PRIOR_SPEEDUP[isa])[0] == "exact"
    # the model reproduces the AMD measurement it was fitted to (screen 0.64x exact at 1.9x)
    assert math.isclose(machine.predicted_screen_cost(1.9), 0.64, abs_tol=0.01)
    costs = [machine.predicted_screen_cost(s) for s in (0.5, 1, 2, 4, 8)]
    assert costs == sorted(costs, reverse=True) and costs[1] == 1.0


def test_screen_still_pays_accounts_for_the_recheck_share():
    assert machine.screen_still_pays(0.36, 0, 0)
    assert machine.screen_still_pays(0.36, 16, 4)  # 25% back to fp32: 0.36 + 0.28
    assert not machine.screen_still_pays(0.36, 16, 12)  # 75%: 0.36 + 0.83
    # with the reference pass asked for, only two of three passes are re-checked
    assert machine.screen_still_pays(0.36, 16, 12, passes=3) and not machine.screen_still_pays(0.36, 16, 12, passes=2)


def test_calibration_measures_both_dtypes():
    peaks = machine.measure_matmuls(64, 128, rows=32, budget_s=0.05)
    assert set(peaks) == {"fp32", "bf16"} and all(v > 0 and math.isfinite(v) for v in peaks.values())


def test_decision_is_measured_once_then_cached_and_keyed(tiny_lm, score_cache, monkeypatch):
    monkeypatch.delenv("SARFT_FAST_PLAN", raising=False)
    monkeypatch.delenv("SARFT_CALIBRATE", raising=False)
    calls = []
    real = machine.measure_matmuls
    monkeypatch.setattr(machine, "measure_matmuls", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = machine.machine_decision(tiny_lm.model)
    assert first.source == "measured" and calls == [(64, 128)]
    path = machine.decision_file()
    assert path.parent == score_cache / "machine" and str(path) == first.path
    stored = json.loads(path.read_text())
    assert stored["torch"] == torch.__version__ and stored["identity"]["model"] == machine.cpu_identity()["model"]
    assert set(stored["shapes"]["64x128"]) >= {"fp32_gflops", "bf16_gflops", "plan"}
    again = machine.machine_decision(tiny_lm.model)
    assert again.source == "cached" and len(calls) == 1 and (again.plan, again.speedup) == (first.plan, first.speedup)
    assert again.plan in again.describe() and "torch" in again.describe()
    # another CPU model, or another torch version, is another file
    monkeypatch.setattr(machine, "cpu_identity", spr_identity)
    assert machine.decision_file() != path
    assert machine.decision_file(stored["identity"]) == path
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert machine.decision_file(stored["identity"]) != path


def test_damaged_decision_file_is_measured_again(tiny_lm, score_cache, monkeypatch):
    monkeypatch.delenv("SARFT_FAST_PLAN", raising=False)
    path = machine.decision_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"shapes": {"64x128": {"fp32_gflops": 0, "bf16_gflops": "x"}}}')
    assert machine.machine_decision(tiny_lm.model).source == "measured"
    path.write_text("{not json")
    assert machine.machine_decision(tiny_lm.model).source == "measured"


@pytest.fixture
def amx_machine(monkeypatch):
    """This process sees a Sapphire Rapids Xeon (AMX), its measured peaks in the decision file."""
    monkeypatch.delenv("SARFT_FAST_PLAN", raising=False)
    monkeypatch.setattr(machine, "cpu_identity", spr_identity)
    monkeypatch.setattr(machine, "measure_matmuls", lambda *a, **k: pytest.fail("the cached decision must be used"))
    path = machine.decision_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"shapes": {"64x128": {"fp32_gflops": 374.0, "bf16_gflops": 2540.0}}}))
    return path


def test_a_forced_amx_machine_picks_the_screen(tiny_lm, score_cache, amx_machine, monkeypatch):
    plan = fast_plan(tiny_lm, ScoreOptions(fast=True))
    assert (plan.precision, plan.band, plan.auto) == ("bfloat16", 0.03, True) and plan.screen_cost < 0.45
    # without the file and without calibration, the ISA alone decides the same
    amx_machine.unlink()
    monkeypatch.setenv("SARFT_CALIBRATE", "0")
    decision = machine.machine_decision(tiny_lm.model)
    assert decision.source == "isa" and decision.plan == "screen"
    monkeypatch.setattr(machine, "cpu_identity", lambda: read_identity(EPYC_CPUINFO))
    assert fast_plan(tiny_lm, ScoreOptions(fast=True)) is EXACT_PLAN


def test_screen_flags_equal_exact_flags_and_a_costly_role_finishes_exactly(tiny_lm, demo_profiles, score_cache, amx_machine):
    """The screen forced by the (AMX) machine: flags identical to IEEE fp32. The tiny random
    model's margins all lie within the band, so every screened sample goes back to fp32: after
    the probe the run leaves the screen for the exact path."""
    profile = demo_profiles["Baron Vex Morrow"]
    samples = load_samples(DEMO_SAMPLES, role=profile.name)[:24]
    fast = score_role(tiny_lm, samples, profile, ScoreOptions(fast=True))
    assert "amx_bf16" in fast.stats["plan"] and "screen" in fast.stats["plan"]
    assert fast.stats["path"].startswith("packed-bf16, exact after 16 samples")
    exact = score_role(tiny_lm, samples, profile, ScoreOptions())
    assert exact.stats["from_cache"] == 8  # the samples scored exactly after the switch
    assert fast.frame().harmful.tolist() == exact.frame().harmful.tolist()
    assert fast.stats["rechecked"] == 16
    # re-checked samples carry exact flag passes; their reference pass stays the screen's
    f, e = fast.frame(), exact.frame()
    assert (f.logp_role - e.logp_role).abs().max() < 1e-5 and (f.logp_unsafe - e.logp_unsafe).abs().max() < 1e-5
    assert not f.logp_ref.head(16).equals(e.logp_ref.head(16))


def test_an_interrupted_run_keeps_every_finished_sample(tiny_lm, demo_profiles, demo_samples, score_cache):
    """Fewer samples than a chunk: the ones finished before the stop are kept (issue 14)."""
    profile = demo_profiles["Sister Alma Reyes"]
    samples = demo_samples[:10]
    polls = {"n": 0}

    def stop_midway():
        polls["n"] += 1
        return polls["n"] > 12  # a dozen batches of ~4, then stop

    options = ScoreOptions(max_batch_tokens=160)  # one or two samples per batch
    assert options.chunk_size > len(samples)
    with pytest.raises(Cancelled):
        score_role(tiny_lm, samples, profile, options, should_stop=stop_midway)
    resumed = score_role(tiny_lm, samples, profile, options)
    assert 0 < resumed.stats["from_cache"] < len(samples)
    assert resumed.stats["from_cache"] + resumed.stats["scored"] == len(samples)
    fresh = score_role(tiny_lm, samples, profile, options, use_cache=False).frame()
    cols = ["logp_ref", "logp_role", "logp_unsafe"]
    assert (fresh[cols] - resumed.frame()[cols]).abs().max().max() < 1e-6


@pytest.mark.parametrize("field, value, allowed", [
    ("recheck_band", math.nan, r"finite number >= 0"),
    ("recheck_band", -1.0, r"finite number >= 0"),
    ("recheck_band", math.inf, r"finite number >= 0"),
    ("recheck_band", "0.1", r"finite number >= 0"),
    ("max_batch_tokens", 0, r"an integer >= 1"),
    ("max_batch_tokens", -5, r"an integer >= 1"),
    ("max_batch_tokens", 1.5, r"an integer >= 1"),
    ("max_batch_tokens", True, r"an integer >= 1"),
    ("max_prompt_tokens", 0, r"an integer >= 1"),
    ("max_answer_tokens", -1, r"an integer >= 1"),
    ("chunk_size", 0, r"an integer >= 1"),
])
def test_numeric_options_are_validated_with_their_range(field, value, allowed):
    with pytest.raises(SarftError, match=allowed) as err:
        ScoreOptions(**{field: value}).validate()
    assert err.value.fix  # names what to give instead


def test_valid_numeric_options_pass():
    ScoreOptions(fast=True, recheck_band=0.0, max_batch_tokens=1, chunk_size=1).validate()
    ScoreOptions(fast=True, recheck_band=10, max_batch_tokens=None).validate()


def test_records_of_one_plan_are_not_served_to_another(tiny_lm, demo_profiles, demo_samples, score_cache):
    """One cache per role; every record carries its plan's tag (precision and band), and a run
    reads only its own plan's records and the exact ones."""
    profile = demo_profiles["Captain Nell Corran"]
    samples = load_samples(DEMO_SAMPLES, role=profile.name)[:4]
    bare = score_role(tiny_lm, samples, profile, ScoreOptions(fast=True, recheck_band=0.0))
    assert bare.stats["scored"] == 4
    assert score_role(tiny_lm, samples, profile, ScoreOptions(fast=True, recheck_band=0.0)).stats["from_cache"] == 4
    wide = score_role(tiny_lm, samples, profile, ScoreOptions(fast=True, recheck_band=10.0))
    assert wide.stats["from_cache"] == 0 and wide.stats["rechecked"] == 4
    summed = score_role(tiny_lm, samples, profile, ScoreOptions(fast=True, recheck_band=10.0, normalise="sum"))
    assert summed.stats["from_cache"] == 0  # a band on sums is another re-check
    exact = score_role(tiny_lm, samples, profile)
    assert exact.stats["from_cache"] == 0
    tags = {json.loads(line)["plan"] for path in Path(exact.stats["cache_dir"]).glob("records*.jsonl") for line in open(path)}
    assert tags == {"exact", "packed-bf16-recheck0.0", "packed-bf16-recheck10.0", "packed-bf16-recheck10.0-sum"}
    # and any fast plan may use exact records
    assert score_role(tiny_lm, samples, profile, ScoreOptions(fast=True, recheck_band=0.5)).stats["from_cache"] == 4
