"""Shared fixtures: a tiny random Llama (fast unit tests) and the real embedded model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the fuzz tests on a fixed sequence of examples (a red CI must be reproducible);
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ROLEBENCH_SPE = SHARED_DATA / "rolebench" / "instruction-generalization" / "role_specific" / "test.jsonl"
ROLE_PROMPTS = SHARED_DATA / "profiles" / "role_prompts.json"


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Caches and runs of the tests go to temporary folders; the converted embedded model is reused."""
    if "SARFT_HOME" not in os.environ:
        os.environ["SARFT_HOME"] = str(Path.home() / ".cache" / "sarft_studio")
    os.environ["SARFT_WORKSPACE"] = str(tmp_path_factory.mktemp("workspace"))
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Modules that start many small CPU jobs run them on one torch thread (then restore it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def score_cache(tmp_path, monkeypatch):
    """A private score cache for one test (the converted model stays shared): the cache module's
    root, the one place score folders are made (sarft_core.scoring.cache)."""
    import sarft_core.scoring.cache as scoring

    monkeypatch.setattr(scoring, "cache_root", lambda: tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def embedded_dir():
    from sarft_core.models import resolve_model_dir

    return resolve_model_dir("embedded")[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_dir):
    """A 2-layer random Llama with the embedded model's tokenizer, saved as a local directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sarft_core.models import load_tokenizer

    tok = load_tokenizer(embedded_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from sarft_core.models import load_model

    return load_model(str(tiny_model_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def embedded_lm():
    from sarft_core.models import load_model

    return load_model("embedded", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def demo_profiles():
    from sarft_core.data import DEMO_PROFILES, load_profiles

    return load_profiles(DEMO_PROFILES)


@pytest.fixture(scope="session")
def demo_samples():
    from sarft_core.data import DEMO_SAMPLES, load_samples

    return load_samples(DEMO_SAMPLES, role="Baron Vex Morrow")
