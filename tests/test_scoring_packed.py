"""The packed, padding-free Llama-family forward: the same log-probs as the Hugging Face path."""
import pytest
import torch

import sarft_core.scoring.engine as engine
from sarft_core.scoring.engine import encode_passes, packed_runner, reduce_logps, score_pass
from sarft_core.scoring.packed import PackedLlama, supports
from sarft_core.scoring.published import published_logps


def _hf_pass(monkeypatch, model, prompts, answers, pad, budget=4096):
    monkeypatch.setattr(engine, "_PACKED_DISABLED", True)
    try:
        return score_pass(model, prompts, answers, pad, budget).token_logps
    finally:
        monkeypatch.setattr(engine, "_PACKED_DISABLED", False)


def _max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def _tiny(config_cls, model_cls, vocab, **extra):
    torch.manual_seed(1)
    cfg = config_cls(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024, **extra)
    return model_cls(cfg).eval()


@pytest.mark.parametrize("budget", [48, 4096])
def test_packed_equals_hf_path_token_by_token(tiny_lm, demo_profiles, demo_samples, monkeypatch, budget):
    assert packed_runner(tiny_lm.model) is not None  # the tiny Llama takes the packed path
    profile = demo_profiles["Baron Vex Morrow"]
    enc = encode_passes(tiny_lm.tokenizer, {"role": profile.role_prompt, "ref": ""}, demo_samples[:9])
    for name in ("role", "ref"):
        packed = score_pass(tiny_lm.model, enc.prompt_ids[name], enc.answer_ids, 0, budget).token_logps
        hf = _hf_pass(monkeypatch, tiny_lm.model, enc.prompt_ids[name], enc.answer_ids, 0, budget)
        assert [len(t) for t in packed] == [len(a) for a in enc.answer_ids]
        assert _max_diff(packed, hf) < 1e-5


def test_packed_without_any_shared_prefix(tiny_lm, monkeypatch):
    # prompts that share no token at all: no prefix cache, suffix attention only
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    answers = [[20, 21], [22, 23, 24], [25]]
    packed = score_pass(tiny_lm.model, prompts, answers, 0).token_logps
    hf = _hf_pass(monkeypatch, tiny_lm.model, prompts, answers, 0)
    assert _max_diff(packed, hf) < 1e-5


def test_packed_qwen2_with_projection_bias(monkeypatch):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = _tiny(Qwen2Config, Qwen2ForCausalLM, 300)
    assert supports(model) and model.model.layers[0].self_attn.q_proj.bias is not None
    prompts = [[1, 2, 3, 4, 50, 60], [1, 2, 3, 4, 70], [1, 2, 3, 4, 80, 81, 82]]
    answers = [[7, 8, 9], [10, 11], [12, 13, 14, 15]]
    packed = score_pass(model, prompts, answers, 0).token_logps
    hf = _hf_pass(monkeypatch, model, prompts, answers, 0)
    assert _max_diff(packed, hf) < 1e-5


def test_unsupported_models_take_the_generic_path():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2)).eval()
    assert not supports(gpt2) and packed_runner(gpt2) is None
    got = score_pass(gpt2, [[1, 2, 3], [1, 2, 4, 5]], [[6, 7], [8]], 0).token_logps
    assert [len(t) for t in got] == [2, 1]
    with pytest.raises(ValueError, match="does not support"):
        PackedLlama(gpt2)


def test_packed_skips_peft_wrapped_models(tiny_lm):
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(tiny_lm.model), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not supports(peft_model)


def test_precisions(tiny_lm, demo_profiles, demo_samples):
    profile = demo_profiles["Sister Alma Reyes"]
    enc = encode_passes(tiny_lm.tokenizer, {"role": profile.role_prompt}, demo_samples[:6])
    p, a = enc.prompt_ids["role"], enc.answer_ids
    exact = score_pass(tiny_lm.model, p, a, 0).token_logps
    bf16 = score_pass(tiny_lm.model, p, a, 0, precision="bfloat16").token_logps
    assert 0 < _max_diff(exact, bf16) < 0.1  # bf16 weights: close, not exact
    ref = published_logps(tiny_lm.model, tiny_lm.tokenizer, profile.role_prompt, demo_samples[:6])
    assert max(abs(reduce_logps(t) - r) for t, r in zip(exact, ref)) < 1e-4
    with pytest.raises(ValueError, match="unknown precision"):
        PackedLlama(tiny_lm.model, "float8")


def test_onednn_linear_is_float32_exact_with_and_without_reordered_weights(monkeypatch):
    """The packed path's linear layers (oneDNN, weights reordered once) agree with F.linear to
    float32 rounding, with a bias, under a global bf16 matmul setting too; with the float32
    copies over budget the module's own weights are used, with the same result."""
    import sarft_core.scoring.packed as packed
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = _tiny(Qwen2Config, Qwen2ForCausalLM, 300)  # q/k/v projections carry biases
    runner = PackedLlama(model)
    monkeypatch.setattr(packed, "PREPACK_MAX_BYTES", 0)
    plain = PackedLlama(model)
    attn = model.model.layers[0].self_attn
    assert plain._weights[attn.q_proj] is not runner._weights[attn.q_proj]
    x = torch.randn(37, model.config.hidden_size)
    want = (x.double() @ attn.q_proj.weight.double().T + attn.q_proj.bias.double()).float()
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with runner._strict():
            got = runner._dense(x, attn.q_proj)
        with plain._strict():
            got_plain = plain._dense(x, attn.q_proj)
        head = runner.head(torch.randn(5, model.config.hidden_size))
    finally:
        torch.set_float32_matmul_precision(before)
    assert got.dtype == torch.float32 and (got - want).abs().max() < 1e-5
    assert (got_plain - want).abs().max() < 1e-5
    assert head.shape == (5, 300)
    monkeypatch.setenv("SARFT_ONEDNN", "0")
    assert packed._onednn_linear_op() is None


def test_strict_context_restores_the_global_switch(tiny_lm):
    before = torch.backends.mkldnn.matmul.fp32_precision
    runner = packed_runner(tiny_lm.model)
    runner.head(torch.randn(3, tiny_lm.model.config.hidden_size))
    runner.hidden([[5, 6, 7]], None, 0)
    assert torch.backends.mkldnn.matmul.fp32_precision == before


def test_runner_cache_is_weak(tiny_lm):
    import gc

    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    packed_runner(model)
    assert model in engine._PACKED
    del model
    gc.collect()
    assert len([m for m in engine._PACKED if m.config.vocab_size == 50]) == 0


@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention_op_matches_the_written_out_reference(causal):
    from sarft_core.scoring.packed import _attention, attention_reference

    torch.manual_seed(0)
    L, S = (7, 7) if causal else (5, 11)
    q = torch.randn(2, 6, L, 16)
    k, v = torch.randn(2, 3, S, 16), torch.randn(2, 3, S, 16)  # 2 query heads per key head
    out, lse = _attention(q.transpose(1, 2).contiguous().transpose(1, 2), k, v, causal)  # strided input
    ref_out, ref_lse = attention_reference(q, k, v, causal)
    assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(lse, ref_lse, atol=1e-5)


def test_exact_path_stays_ieee_under_a_global_bf16_setting():
    """torch.set_float32_matmul_precision("medium") means bf16 arithmetic on CPUs that have it;
    the packed forward's IEEE context keeps float32 regardless, and nested or concurrent
    contexts restore the global setting only when the last one leaves."""
    import threading

    from sarft_core.scoring.packed import ieee_matmuls

    torch.manual_seed(0)
    x, w = torch.randn(512, 576), torch.randn(1536, 576)
    exact = torch.nn.functional.linear(x, w)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    backend = torch.backends.mkldnn.matmul
    try:
        medium = backend.fp32_precision
        loose = torch.nn.functional.linear(x, w)
        inside, entered, release = [], threading.Event(), threading.Event()

        def other():
            with ieee_matmuls():
                entered.set()
                release.wait(10)
                inside.append(backend.fp32_precision)

        t = threading.Thread(target=other)
        t.start()
        entered.wait(10)
        with ieee_matmuls():
            strict = torch.nn.functional.linear(x, w)
        assert backend.fp32_precision == "ieee"  # the other scorer is still inside
        release.set()
        t.join()
        assert inside == ["ieee"] and backend.fp32_precision == medium
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(strict, exact)
    if torch.equal(loose, exact):
        pytest.skip("this CPU has no bf16 matmuls: the global setting changes nothing here")
    assert (loose - exact).abs().max() < 1e-2


def _three_passes(tiny_lm, demo_profiles, demo_samples):
    profile = demo_profiles["Baron Vex Morrow"]
    systems = {"ref": "", "role": profile.role_prompt, "unsafe": profile.unsafe_prompt}
    return encode_passes(tiny_lm.tokenizer, systems, demo_samples[:14])


def test_worker_pool_gives_the_single_worker_results_bit_for_bit(tiny_lm, demo_profiles, demo_samples, monkeypatch):
    import threading

    from sarft_core.scoring.engine import score_passes, scoring_workers

    enc = _three_passes(tiny_lm, demo_profiles, demo_samples)
    threads = torch.get_num_threads()
    monkeypatch.setenv("SARFT_SCORING_WORKERS", "1")
    one = score_passes(tiny_lm.model, enc.prompt_ids, enc.answer_ids, 0, 64)
    monkeypatch.setenv("SARFT_SCORING_WORKERS", "3")
    assert scoring_workers(tiny_lm.model, 20) == 3 and scoring_workers(tiny_lm.model, 2) == 2
    seen = []
    pool = score_passes(tiny_lm.model, enc.prompt_ids, enc.answer_ids, 0, 64,
                        progress=lambda done, total: seen.append((done, total, threading.current_thread() is threading.main_thread())))
    assert {k: v.token_logps for k, v in pool.items()} == {k: v.token_logps for k, v in one.items()}
    assert seen[-1][:2] == (42, 42) and [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert all(on_main for _, _, on_main in seen)  # progress is reported on the calling thread
    assert torch.get_num_threads() == threads
    # the generic Hugging Face path and GPUs keep one worker
    from transformers import GPT2Config, GPT2LMHeadModel

    assert scoring_workers(GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2)), 20) == 1


def test_worker_pool_cancels_and_passes_on_errors(tiny_lm, demo_profiles, demo_samples, monkeypatch):
    from sarft_core.scoring.engine import Cancelled, score_passes

    enc = _three_passes(tiny_lm, demo_profiles, demo_samples)
    threads = torch.get_num_threads()
    monkeypatch.setenv("SARFT_SCORING_WORKERS", "2")
    calls = []
    with pytest.raises(Cancelled):
        score_passes(tiny_lm.model, enc.prompt_ids, enc.answer_ids, 0, 64, should_stop=lambda: bool(calls.append(1)) or len(calls) > 2)
    assert torch.get_num_threads() == threads
    runner = packed_runner(tiny_lm.model)
    real = runner.hidden
    count = []

    def flaky(*args, **kwargs):
        count.append(1)
        if len(count) == 3:
            raise MemoryError("out of memory in a worker")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "hidden", flaky)
    with pytest.raises(MemoryError, match="in a worker"):
        score_passes(tiny_lm.model, enc.prompt_ids, enc.answer_ids, 0, 64)
    assert torch.get_num_threads() == threads
