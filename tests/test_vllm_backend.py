"""The optional vLLM backend: one clear error where it cannot run, and the same rows as our
engine where it can.

vLLM is not part of the default install (it pins its own torch and transformers). The tests
that run it are skipped here unless vLLM is importable; to run them, set up its venv and use it:
``bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/test_vllm_backend.py``.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from sarft_core.errors import SarftError
from sarft_core.evaluation.generation import GenerationConfig
from sarft_core.scoring import ScoreOptions
from sarft_core.vllm_backend import available
from tests.conftest import ROOT

needs_vllm = pytest.mark.skipif(not available(), reason="vLLM is not installed here (bash scripts/setup_vllm.sh, then run with .venv-vllm/bin/python)")


def test_unknown_backend_is_one_clear_error():
    with pytest.raises(SarftError, match="unknown backend 'vlm'"):
        ScoreOptions(backend="vlm").validate()
    with pytest.raises(SarftError, match="unknown backend"):
        GenerationConfig(backend="onnx")


@pytest.mark.skipif(available(), reason="vLLM is installed: the missing-vLLM error cannot happen")
def test_missing_vllm_names_the_fix_before_any_work(tmp_path):
    with pytest.raises(SarftError) as err:
        ScoreOptions(backend="vllm").validate()
    assert "not installed" in str(err.value) and "setup_vllm.sh" in err.value.fix
    out = tmp_path / "scores.csv"
    proc = subprocess.run([sys.executable, "-m", "sarft_core", "score", "--role", "Baron Vex Morrow", "--backend", "vllm", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "vLLM is not installed" in proc.stderr and not out.exists()


def test_engine_only_options_are_refused_with_vllm(monkeypatch):
    monkeypatch.setattr("sarft_core.vllm_backend.available", lambda: True)  # the check under test comes after the import check
    with pytest.raises(SarftError, match="fast mode"):
        ScoreOptions(backend="vllm", fast=True).validate()
    with pytest.raises(SarftError, match="tensor-parallel"):
        ScoreOptions(backend="vllm", tensor_parallel=0).validate()
    with pytest.raises(SarftError, match="ROSE"):
        GenerationConfig(backend="vllm", decoding="rose")


def test_backend_choice_keeps_old_result_keys():
    """The torch backend's identity is what it was before the choice existed (saved results
    stay valid); vLLM's differs (its numbers do); tensor parallelism changes nothing computed."""
    plain = GenerationConfig().identity()
    assert "backend" not in plain and "tensor_parallel" not in plain


@needs_vllm
def test_vllm_scores_match_the_engine(embedded_lm, demo_samples, demo_profiles, score_cache):
    from sarft_core.data import get_profile
    from sarft_core.scoring import score_role

    profile = get_profile(demo_profiles, "Baron Vex Morrow")
    samples = [s for s in demo_samples if s.role == profile.name][:8]
    ours = score_role(embedded_lm, samples, profile, ScoreOptions(passes=("role", "unsafe")), use_cache=False).frame()
    theirs = score_role(embedded_lm, samples, profile, ScoreOptions(passes=("role", "unsafe"), backend="vllm"), use_cache=False).frame()
    for col in ("logp_role", "logp_unsafe"):
        assert (ours[col] - theirs[col]).abs().max() < 1e-4
    assert list(ours.harmful) == list(theirs.harmful)


@needs_vllm
def test_vllm_greedy_answers_match_model_generate(embedded_lm):
    from sarft_core.evaluation.generation import generate

    prompts = ["Name three primary colours.", "What is 12 times 12?", "Write one sentence about the sea."]
    ours = generate(embedded_lm, prompts, GenerationConfig(max_new_tokens=16))
    theirs = generate(embedded_lm, prompts, GenerationConfig(max_new_tokens=16, backend="vllm"))
    assert sum(a == b for a, b in zip(ours, theirs)) >= 2  # fp32 greedy: a tie may break differently, rarely
