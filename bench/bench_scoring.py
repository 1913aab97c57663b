"""RDS scoring benchmark: the engine against a faithful re-implementation of the published scorer.

Same process, same model (the embedded SmolLM2-135M-Instruct), same 64 samples of a villainous
RoleBench role. Prints samples/s of both, their ratio, the engine's achieved GFLOP/s against
this machine's measured matmul peak, max |delta| of each log-prob and the flag agreement,
for the two passes the flag needs (role, unsafe), for all three (with ref), and for the fast
mode (bf16 arithmetic, then an fp32 re-check near the flag boundary). It also times the fast
path without its re-check and pure bf16 weights, and prints how far each moves the flag margins.

    python bench/bench_scoring.py [--samples 64] [--role "John Doe"] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarft_core.chat import encode  # noqa: E402
from sarft_core.data import get_profile, load_profiles, load_samples  # noqa: E402
from sarft_core.models import load_model  # noqa: E402
from sarft_core.scoring import ScoreOptions, score_role  # noqa: E402
from sarft_core.scoring.engine import common_prefix_len, score_pass  # noqa: E402
from sarft_core.scoring.published import published_logps  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def matmul_peak(dtype, n=2048, repeats=6) -> float:
    """Best GFLOP/s of an n x n x n matmul in this process (the machine's practical peak)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def layer_params(model) -> int:
    """Parameters of the matmuls inside the decoder layers (norms excluded)."""
    decoder = model.get_decoder()
    return sum(p.numel() for name, p in decoder.layers.named_parameters() if p.dim() == 2)


def engine_flops(model, prompt_ids, answer_ids) -> float:
    """Useful FLOPs of the engine on one pass: shared prefix once, suffixes, head on answers only."""
    cfg = model.config
    per_token = 2 * layer_params(model)
    attn_width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    head = 2 * cfg.hidden_size * cfg.vocab_size
    shared = max(0, min(common_prefix_len(prompt_ids), min(len(p) for p in prompt_ids) - 1))

    def attention(start, stop):  # QK^T and AV of query positions [start, stop) over their causal context
        return sum(4 * attn_width * (pos + 1) for pos in range(start, stop)) * cfg.num_hidden_layers

    total = shared * per_token + attention(0, shared)
    for p, a in zip(prompt_ids, answer_ids):
        end = len(p) + len(a) - 1
        total += (end - shared) * per_token + attention(shared, end) + len(a) * head
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
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16)
    print(f"matmul peak here: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")

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
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    score_pass(lm.model, prompts["role"][:8], answers[:8], pad, 2048, precision="bfloat16")
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
        "fast-raw": ScoreOptions(passes=("role", "unsafe"), fast=True, recheck_band=0.0),
        "fast": ScoreOptions(passes=("role", "unsafe"), fast=True),
    }
    bf16_runs: list = []

    def run_bf16():
        """Pure bfloat16 weights and matmuls (packed precision "bfloat16"), no re-check: for the record."""
        t0 = time.perf_counter()
        means = {}
        for p in ("role", "unsafe"):
            got = score_pass(lm.model, prompts[p], answers, pad, 2048, prefix_kv_cache={}, precision="bfloat16").token_logps
            means[p] = [sum(x) / len(x) for x in got]
        bf16_runs.append((means, time.perf_counter() - t0))
    # interleave the published scorer and the engine and keep each one's best time, so that a
    # burst of load from other processes cannot favour either side
    for _ in range(repeats):
        for k in ("role", "unsafe", "ref"):
            pub[k], t = timed(lambda k=k: published_logps(lm.model, tok, systems[k], samples))
            t_pub[k] = min(t_pub[k], t)
            if k == "unsafe":
                run_engine("two", configs["two"])
        for label in ("three", "fast-raw", "fast"):
            run_engine(label, configs[label])
        run_bf16()
    report = {"samples": n, "role": profile.name, "peak_fp32_gflops": peak32, "peak_bf16_gflops": peak16, "repeats": repeats}

    def compare(label, passes, options, key):
        result, t = engine_runs[key]
        df = result.frame()
        t_ref = sum(t_pub[p] for p in passes)
        flops = sum(engine_flops(lm.model, prompts[p], answers) for p in passes)
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
    raw_df = engine_runs["fast-raw"][0].frame()
    drift = ((raw_df.logp_unsafe - raw_df.logp_role) - exact_margin).abs()
    flips = int((raw_df.harmful != exact2.harmful).sum())
    print(f"\nfast path without re-check (fp32 tensors, oneDNN bf16 arithmetic): x{t_two_pub / engine_runs['fast-raw'][1]:.2f} vs published, "
          f"max |delta margin| vs fp32 {drift.max():.2e}, flags flipped {flips}/{n}")
    report["fast_raw_speedup"] = t_two_pub / engine_runs["fast-raw"][1]
    report["fast_raw_margin_drift_max"] = float(drift.max())
    report["fast_raw_flips"] = flips
    means, t_bf16 = min(bf16_runs, key=lambda r: r[1])
    bf16_margin = [u - r for u, r in zip(means["unsafe"], means["role"])]
    bdrift = max(abs(b - e) for b, e in zip(bf16_margin, exact_margin))
    bflips = sum((b > 0) != h for b, h in zip(bf16_margin, exact2.harmful))
    print(f"pure bf16 weights, no re-check: x{t_two_pub / t_bf16:.2f} vs published, max |delta margin| vs fp32 {bdrift:.4f}, flags flipped {bflips}/{n}")
    report["bf16_raw_speedup"] = t_two_pub / t_bf16
    report["bf16_margin_drift_max"] = bdrift
    report["bf16_flips_without_recheck"] = int(bflips)
    report["fast_two_passes"], fast_df = compare("fast mode: bf16 arithmetic + fp32 re-check, two passes", ("role", "unsafe"), configs["fast"], "fast")
    same = bool((fast_df.harmful == exact2.harmful).all())
    print(f"  fast-mode flags identical to the fp32 engine's: {same}")
    report["fast_flags_identical_to_fp32"] = same
    print(f"\nmatmul peak re-measured at the end: fp32 {matmul_peak(torch.float32):.0f} GFLOP/s (start: {peak32:.0f})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
