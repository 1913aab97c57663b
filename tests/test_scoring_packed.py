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


@pytest.mark.parametrize("with_prefix", [True, False])
@pytest.mark.parametrize("onednn", [True, False])
def test_suffix_prefix_attention_matches_the_written_out_reference(with_prefix, onednn, monkeypatch):
    """Padded suffixes of different lengths (several row blocks), 3 query heads per key head,
    with and without a shared prefix, through oneDNN or F.linear: every real query's output
    equals softmax attention over the prefix and its own suffix up to itself."""
    import math

    import sarft_core.scoring.packed as packed

    monkeypatch.setattr(packed, "SUFFIX_BLOCK_ROWS", 4)
    torch.manual_seed(0)
    G, rep, D, P, lengths = 2, 3, 16, 9, [13, 7, 10]
    B, W = len(lengths), max(lengths)
    q, k, v = torch.randn(B, G * rep, W, D), torch.randn(B, G, W, D), torch.randn(B, G, W, D)
    pk, pv = torch.randn(G, P, D), torch.randn(G, P, D)
    op = packed._onednn_linear_op() if onednn else None
    if onednn and op is None:
        pytest.skip("no oneDNN here")
    runner = PackedLlama.__new__(PackedLlama)
    runner._op = op
    prefix = runner._prefix_weights(pk, pv) if with_prefix else None
    # the engine's layout: per key head, padded rows (b, w) holding that head's rep queries
    scale = packed._QK_SCALE / math.sqrt(D)
    qbuf = (q * scale).view(B, G, rep, W, D).permute(1, 0, 3, 2, 4).reshape(G, B * W, rep * D).contiguous()
    kbuf = k.transpose(0, 1).reshape(G, B * W, D).contiguous()
    vbuf = v.transpose(0, 1).reshape(G, B * W, D).contiguous()
    for b, n in enumerate(lengths):  # padding: zero, as in the engine
        qbuf.view(G, B, W, -1)[:, b, n:] = 0
        kbuf.view(G, B, W, -1)[:, b, n:] = 0
        vbuf.view(G, B, W, -1)[:, b, n:] = 0
    out = packed._suffix_prefix_attention(qbuf, kbuf, vbuf, packed._causal_mask(W, rep, "cpu"), B, W, prefix, op)
    got = out.view(G, B, W, rep, D).permute(1, 0, 3, 2, 4).reshape(B, G * rep, W, D)
    causal = torch.ones(W, W, dtype=torch.bool).tril()
    if with_prefix:
        keys = torch.cat([pk.expand(B, -1, -1, -1), k], 2)
        values = torch.cat([pv.expand(B, -1, -1, -1), v], 2)
        visible = torch.cat([torch.ones(W, P, dtype=torch.bool), causal], 1)
    else:
        keys, values, visible = k, v, causal
    want = packed.attention_reference(q, keys, values, visible)
    for b, n in enumerate(lengths):
        assert (got[b, :, :n].double() - want[b, :, :n]).abs().max() < 1e-5


def test_row_blocks_cover_every_row_once():
    import sarft_core.scoring.packed as packed

    for width in (1, 5, 23, 24, 50, 130, 500):
        blocks = packed._row_blocks(width)
        assert blocks[0][0] == 0 and blocks[-1][1] == width and all(a < b for a, b in blocks)
        assert all(hi == lo for (_, hi), (lo, _) in zip(blocks, blocks[1:])) and len(blocks) <= 8


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
    # whatever the CPU does under "medium" (plain fp32 on some, real bf16 products on others),
    # it stays within bf16 rounding: each product's relative error is at most ~2 * 2^-8
    bound = 2.0 ** -6 * (x.abs() @ w.abs().T) + 1e-4
    assert ((loose - exact).abs() <= bound).all()


def _three_passes(tiny_lm, demo_profiles, demo_samples):
    profile = demo_profiles["Baron Vex Morrow"]
    systems = {"ref": "", "role": profile.role_prompt, "unsafe": profile.unsafe_prompt}
    return encode_passes(tiny_lm.tokenizer, systems, demo_samples[:14])


def test_worker_pool_results_do_not_depend_on_the_number_of_workers(tiny_lm, demo_profiles, demo_samples, monkeypatch):
    """Single-threaded workers give the same bits however many there are; one worker on all
    the threads may differ in the last bits (oneDNN may split a small matmul's reduction
    across threads), well inside the engine's tolerance."""
    import threading

    from sarft_core.scoring.engine import score_passes, scoring_workers

    enc = _three_passes(tiny_lm, demo_profiles, demo_samples)
    threads = torch.get_num_threads()
    monkeypatch.setenv("SARFT_SCORING_WORKERS", "1")
    one = score_passes(tiny_lm.model, enc.prompt_ids, enc.answer_ids, 0, 64)
    monkeypatch.setenv("SARFT_SCORING_WORKERS", "2")
    two = score_passes(tiny_lm.model, enc.prompt_ids, enc.answer_ids, 0, 64)
    monkeypatch.setenv("SARFT_SCORING_WORKERS", "3")
    assert scoring_workers(tiny_lm.model, 20) == 3 and scoring_workers(tiny_lm.model, 2) == 2
    seen = []
    pool = score_passes(tiny_lm.model, enc.prompt_ids, enc.answer_ids, 0, 64,
                        progress=lambda done, total: seen.append((done, total, threading.current_thread() is threading.main_thread())))
    assert {k: v.token_logps for k, v in pool.items()} == {k: v.token_logps for k, v in two.items()}
    assert max(abs(a - b) for k in one for x, y in zip(one[k].token_logps, pool[k].token_logps) for a, b in zip(x, y)) < 1e-5
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


def test_a_prefix_reuses_the_tokens_it_shares_with_another(tiny_lm):
    """A prefix built on another one (all, part or none of it shared) has the keys and values
    of one computed from scratch."""
    runner = packed_runner(tiny_lm.model)
    ids = list(range(10, 40))
    fresh = runner.prefix(ids)
    for base_ids in (ids[:12], ids[:30], ids[:20] + [7, 8, 9], [3, 4, 5]):
        built = runner.prefix(ids, runner.prefix(base_ids))
        assert built.ids == ids and len(built) == 30
        for (k1, v1), (k2, v2) in zip(built.raw, fresh.raw):
            assert k1.shape == k2.shape and (k1 - k2).abs().max() < 1e-5 and (v1 - v2).abs().max() < 1e-5
    shorter = runner.prefix(ids[:8], fresh)  # wholly inside a longer one: its head, no forward
    assert shorter.ids == ids[:8] and all(torch.equal(k[:, :8], k8) for (k, _), (k8, _) in zip(fresh.raw, shorter.raw))
    # it serves a pass's batches: its weights are laid out for oneDNN like a fresh prefix's
    assert [w.is_mkldnn for pairs in shorter.weights for pair in pairs for w in pair] == [
        w.is_mkldnn for pairs in fresh.weights for pair in pairs for w in pair]


def test_passes_share_their_common_prefix_tokens(tiny_lm, demo_profiles, demo_samples, monkeypatch):
    """The unsafe prompt begins with the role profile: its prefix is built on the role's, and
    the log-probs are those of two separate runs."""
    from sarft_core.scoring.engine import score_passes

    profile = demo_profiles["Baron Vex Morrow"]
    enc = encode_passes(tiny_lm.tokenizer, {"role": profile.role_prompt, "unsafe": profile.unsafe_prompt}, demo_samples[:6])
    runner = packed_runner(tiny_lm.model)
    computed = []
    hidden = runner._hidden

    def spy(suffixes, prefix, start, rows=None, collect=None):
        if collect is not None:
            computed.append((start, len(suffixes[0])))
        return hidden(suffixes, prefix, start, rows, collect)

    monkeypatch.setattr(runner, "_hidden", spy)
    together = score_passes(tiny_lm.model, enc.prompt_ids, enc.answer_ids, 0)
    role, unsafe = enc.prompt_ids["role"][0], enc.prompt_ids["unsafe"][0]
    common = next(i for i, (a, b) in enumerate(zip(role, unsafe)) if a != b)
    # the role prefix from its first token; the unsafe one only from where it leaves the role's
    assert common > 20 and [start for start, _ in computed] == [0, common]
    for name in ("role", "unsafe"):
        alone = score_pass(tiny_lm.model, enc.prompt_ids[name], enc.answer_ids, 0).token_logps
        assert _max_diff(together[name].token_logps, alone) < 1e-5


def test_hidden_of_selected_rows_equals_all_rows_picked(tiny_lm):
    runner = packed_runner(tiny_lm.model)
    prefix = runner.prefix(list(range(5, 25)))
    suffixes = [list(range(30, 41)), list(range(50, 56)), list(range(60, 69))]
    rows = torch.tensor([0, 3, 10, 11, 16, 20, 25])
    full = runner.hidden(suffixes, prefix, 20)
    assert full.shape[0] == 26
    assert (runner.hidden(suffixes, prefix, 20, rows) - full[rows]).abs().max() < 1e-5
