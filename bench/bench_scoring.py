"""RDS scoring benchmark: the engine against a faithful re-implementation of the published scorer.

Same process, same model (the embedded SmolLM2-135M-Instruct), same 64 samples of a villainous
RoleBench role. Prints samples/s of both, their ratio, the engine's achieved GFLOP/s against
this machine's fp32 matmul peak (the best of MKL and oneDNN), max |delta| of each log-prob and
the flag agreement, for the two passes the flag needs (role, unsafe), for all three (with ref),
and for the fast mode. For the record it also times the engine with MKL's GEMM instead of
oneDNN's, the bf16 screen alone, and the bf16 screen with its fp32 re-check band.

    python bench/bench_scoring.py [--samples 64] [--role "John Doe"] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarft_core.chat import encode  # noqa: E402
from sarft_core.data import get_profile, load_profiles, load_samples  # noqa: E402
from sarft_core.models import load_model  # noqa: E402
import sarft_core.scoring.engine as engine  # noqa: E402
from sarft_core.scoring import PACKED_BF16_RECHECK_BAND, ScoreOptions, score_role  # noqa: E402
from sarft_core.scoring.engine import common_prefix_len  # noqa: E402
from sarft_core.scoring.published import published_logps  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def matmul_peak(dtype, n=2048, repeats=6, backend="torch") -> float:
    """Best GFLOP/s of an n x n x n matmul in this process: ``torch.mm`` (MKL for float32 on
    the CPU) or ``onednn`` (oneDNN's inner product on a weight reordered once, as the engine runs)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    if backend == "onednn":
        w = torch.ops.mkldnn._reorder_linear_weight(b, n)
        run = lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")  # noqa: E731
    else:
        run = lambda: torch.mm(a, b)  # noqa: E731
    run()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def fp32_peak() -> tuple[float, dict]:
    """The machine's float32 matmul peak: the best of MKL (torch.mm) and oneDNN."""
    found = {"mkl": matmul_peak(torch.float32)}
    if torch.backends.mkldnn.is_available():
        found["onednn"] = matmul_peak(torch.float32, backend="onednn")
    return max(found.values()), found


def layer_params(model) -> int:
    """Parameters of the matmuls inside the decoder layers (norms excluded)."""
    decoder = model.get_decoder()
    return sum(p.numel() for name, p in decoder.layers.named_parameters() if p.dim() == 2)


def engine_flops(model, passes: dict, answer_ids) -> float:
    """The useful FLOPs of scoring ``passes`` (name -> per-sample prompt ids): what the method
    needs, not what the engine happens to run.

    - each pass's shared prefix once, and the leading tokens several passes' prefixes have in
      common once in all (the unsafe prompt begins with the role profile);
    - every suffix token through the layers, with causal attention over its context;
    - in the last layer, positions that predict no answer token only need their keys and values;
    - the LM head on the answer positions only.
    """
    cfg = model.config
    layers = cfg.num_hidden_layers
    layer = 2 * layer_params(model) / layers  # matmul FLOPs per token per layer
    attn0 = model.get_decoder().layers[0].self_attn
    kv_only = 2 * (attn0.k_proj.weight.numel() + attn0.v_proj.weight.numel())
    attn_width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    head = 2 * cfg.hidden_size * cfg.vocab_size

    def attention(start, stop):  # QK^T and AV of query positions [start, stop), causal context
        return 4 * attn_width * (stop * (stop + 1) - start * (start + 1)) / 2

    def positions(start, stop, finish_from):
        """Positions [start, stop) through every layer; the last one finishes [finish_from, stop)."""
        n, finished = stop - start, stop - finish_from
        return ((layers - 1) * (n * layer + attention(start, stop)) + finished * layer + (n - finished) * kv_only
                + attention(finish_from, stop))

    total, prefixes = 0.0, []
    for prompt_ids in passes.values():
        shared = max(0, min(common_prefix_len(prompt_ids), min(len(p) for p in prompt_ids) - 1))
        ids = prompt_ids[0][:shared]
        reused = max((common_prefix_len([ids, other]) for other in prefixes), default=0)
        prefixes.append(ids)
        total += positions(reused, shared, shared)
        for p, a in zip(prompt_ids, answer_ids):
            total += positions(shared, len(p) + len(a) - 1, len(p) - 1) + len(a) * head
    return total


def published_flops(model, prompt_ids, answer_ids, batch=8) -> float:
    cfg = model.config
    per_token = 2 * layer_params(model) + 2 * cfg.hidden_size * cfg.vocab_size
    attn_width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    total = 0.0
    for start in range(0, len(prompt_ids), batch):
        lens = [len(p) + len(a) for p, a in zip(prompt_ids[start : start + batch], answer_ids[start : start + batch])]
        width = max(lens)
        total += len(lens) * (width * per_token + 2 * attn_width * width * width * cfg.num_hidden_layers)
    return total


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--role", default="John Doe")
    ap.add_argument("--data", default=str(SHARED / "rolebench" / "role-generalization" / "role_specific" / "test.jsonl"))
    ap.add_argument("--profiles", default=str(SHARED / "profiles" / "role_prompts.json"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repetitions; the best time of each side counts")
    args = ap.parse_args()

    torch.manual_seed(0)
    lm = load_model(None, dtype="float32", device="cpu")
    profile = get_profile(load_profiles(args.profiles), args.role)
    samples = load_samples(args.data, role=profile.name, limit=args.samples)
    n = len(samples)
    tok = lm.tokenizer
    print(f"model {lm.spec}, role {profile.name}, {n} samples, torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak32, peaks = fp32_peak()
    peak16 = matmul_peak(torch.bfloat16, backend="onednn" if "onednn" in peaks else "torch")
    print("fp32 matmul peak here: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) + f" GFLOP/s (the best counts); bf16 {peak16:.0f} GFLOP/s")

    systems = {"role": profile.role_prompt, "unsafe": profile.unsafe_prompt, "ref": ""}
    enc = {k: [encode(tok, s, x.input, x.output) for x in samples] for k, s in systems.items()}
    prompts = {k: [e.prompt_ids for e in v] for k, v in enc.items()}
    answers = [e.answer_ids for e in enc["role"]]
    mean_tokens = sum(len(p) + len(a) for p, a in zip(prompts["role"], answers)) / n
    print(f"mean tokens per sequence (role prompt + answer): {mean_tokens:.0f}")

    # warm-up of both paths on a few samples (allocator, thread pools)
    published_logps(lm.model, tok, profile.role_prompt, samples[:8])
    score_role(lm, samples[:8], profile, ScoreOptions(passes=("role", "unsafe")), use_cache=False)
    score_role(lm, samples[:8], profile, ScoreOptions(passes=("role", "unsafe"), fast=True), use_cache=False)

    repeats = args.repeats
    score_role(lm, samples[:8], profile, ScoreOptions(passes=("role", "unsafe"), fast=True, recheck_band=0.0), use_cache=False)
    pub, t_pub = {}, {k: math.inf for k in ("role", "unsafe", "ref")}
    engine_runs: dict = {}

    def run_engine(label, options):
        result, t = timed(lambda: score_role(lm, samples, profile, options, use_cache=False))
        best = engine_runs.get(label)
        if best is None or t < best[1]:
            engine_runs[label] = (result, t)

    configs = {
        "two": ScoreOptions(passes=("role", "unsafe")),
        "three": ScoreOptions(),
        "fast": ScoreOptions(passes=("role", "unsafe"), fast=True),
        "screen": ScoreOptions(passes=("role", "unsafe"), fast=True, recheck_band=PACKED_BF16_RECHECK_BAND),
        "screen-raw": ScoreOptions(passes=("role", "unsafe"), fast=True, recheck_band=0.0),
    }

    def run_mkl():
        """The engine with oneDNN off (``F.linear``, MKL's GEMM): how much of the gain is the kernel."""
        os.environ["SARFT_ONEDNN"] = "0"
        engine._PACKED.clear()
        try:
            run_engine("two-mkl", configs["two"])
        finally:
            os.environ.pop("SARFT_ONEDNN")
            engine._PACKED.clear()

    # interleave the published scorer and the engine and keep each one's best time, so that a
    # burst of load from other processes cannot favour either side
    for _ in range(repeats):
        for k in ("role", "unsafe", "ref"):
            pub[k], t = timed(lambda k=k: published_logps(lm.model, tok, systems[k], samples))
            t_pub[k] = min(t_pub[k], t)
            if k == "unsafe":
                run_engine("two", configs["two"])
        for label in ("three", "fast", "screen", "screen-raw"):
            run_engine(label, configs[label])
        run_mkl()
    report = {"samples": n, "role": profile.name, "peak_fp32_gflops": peak32, "peak_bf16_gflops": peak16, "repeats": repeats}

    def compare(label, passes, options, key):
        result, t = engine_runs[key]
        df = result.frame()
        t_ref = sum(t_pub[p] for p in passes)
        flops = engine_flops(lm.model, {p: prompts[p] for p in passes}, answers)
        pflops = sum(published_flops(lm.model, prompts[p], answers) for p in passes)
        deltas = {p: max(abs(a - b) for a, b in zip(pub[p], df[f"logp_{p}"])) for p in passes}
        pub_flags = [u > r for u, r in zip(pub["unsafe"], pub["role"])]
        agree = sum(a == b for a, b in zip(pub_flags, df.harmful))
        row = {
            "published_samples_per_s": n / t_ref, "engine_samples_per_s": n / t, "speedup": t_ref / t,
            "engine_gflops": flops / t / 1e9, "engine_gflop_per_sample": flops / n / 1e9,
            "published_gflop_per_sample": pflops / n / 1e9, "published_gflops": pflops / t_ref / 1e9,
            "max_abs_delta": deltas, "flags_identical": agree == n, "flag_agreement": agree / n,
            "flagged_fraction": float(df.harmful.mean()), "rechecked": result.stats["rechecked"],
        }
        print(
            f"\n[{label}] published {row['published_samples_per_s']:.2f} samples/s "
            f"({row['published_gflop_per_sample']:.1f} GFLOP/sample, {row['published_gflops']:.0f} GFLOP/s) | "
            f"engine {row['engine_samples_per_s']:.2f} samples/s ({row['engine_gflop_per_sample']:.1f} GFLOP/sample) | "
            f"speed-up x{row['speedup']:.2f}\n  engine achieves {row['engine_gflops']:.0f} GFLOP/s = "
            f"{100 * row['engine_gflops'] / peak32:.0f}% of the fp32 matmul peak; "
            f"max |delta| " + ", ".join(f"{p} {d:.2e}" for p, d in deltas.items())
            + f"; flags identical: {row['flags_identical']} ({agree}/{n}); flagged {100 * row['flagged_fraction']:.1f}%"
            + (f"; re-checked in fp32: {row['rechecked']}" if options.fast else "")
        )
        return row, df

    report["two_passes"], exact2 = compare("two passes (role, unsafe), fp32", ("role", "unsafe"), configs["two"], "two")
    report["three_passes"], _ = compare("three passes (ref, role, unsafe), fp32", ("role", "unsafe", "ref"), configs["three"], "three")
    t_two_pub = sum(t_pub[p] for p in ("role", "unsafe"))
    exact_margin = exact2.logp_unsafe - exact2.logp_role
    mkl_t = engine_runs["two-mkl"][1]
    print(f"\nengine with MKL's GEMM instead of oneDNN (SARFT_ONEDNN=0), two passes: x{t_two_pub / mkl_t:.2f} vs published; "
          f"oneDNN makes the engine {mkl_t / engine_runs['two'][1]:.2f}x faster")
    report["two_passes_mkl_speedup"] = t_two_pub / mkl_t
    raw_df = engine_runs["screen-raw"][0].frame()
    drift = ((raw_df.logp_unsafe - raw_df.logp_role) - exact_margin).abs()
    flips = int((raw_df.harmful != exact2.harmful).sum())
    print(f"bf16 screen alone (packed, bf16 weights, no re-check): x{t_two_pub / engine_runs['screen-raw'][1]:.2f} vs published, "
          f"max |delta margin| vs fp32 {drift.max():.4f}, flags flipped {flips}/{n}")
    report["bf16_screen_raw_speedup"] = t_two_pub / engine_runs["screen-raw"][1]
    report["bf16_margin_drift_max"] = float(drift.max())
    report["bf16_flips_without_recheck"] = flips
    report["bf16_screen_two_passes"], screen_df = compare(
        f"bf16 screen + fp32 re-check within {PACKED_BF16_RECHECK_BAND}, two passes", ("role", "unsafe"), configs["screen"], "screen")
    report["fast_two_passes"], fast_df = compare(
        f"fast mode (--dtype bfloat16; path: {engine_runs['fast'][0].stats['path']}), two passes", ("role", "unsafe"), configs["fast"], "fast")
    same = bool((fast_df.harmful == exact2.harmful).all()) and bool((screen_df.harmful == exact2.harmful).all())
    print(f"  fast-mode and screen flags identical to the fp32 engine's: {same}")
    report["fast_flags_identical_to_fp32"] = same
    print(f"\nfp32 matmul peak re-measured at the end: {fp32_peak()[0]:.0f} GFLOP/s (start: {peak32:.0f})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
