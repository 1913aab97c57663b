"""RDS scoring benchmark: the engine against a faithful re-implementation of the published scorer.

Same process, same model, same samples of a villainous RoleBench role (64 of John Doe by
default). First the machine: CPU model, ISA flags, the fast mode's plan on it
(:mod:`sarft_core.scoring.machine`) and its fp32 and bf16 matmul peaks (on a GPU: its name and
measured bf16 peak). Then samples/s of both scorers, their ratio, the engine's achieved GFLOP/s
against the peak (on the CPU the fp32 one, the best of MKL and oneDNN; on a GPU the bf16 one:
the model-FLOPs utilisation), max |delta| of each log-prob and the flag agreement, for the two
passes the flag needs (role, unsafe), for all three (with ref), and on the CPU for the fast
mode. For the record it also times, on the CPU, the engine with MKL's GEMM instead of oneDNN's,
the bf16 screen alone, and the bf16 screen with its fp32 re-check band.

Models (``--config``): ``embedded`` (SmolLM2-135M-Instruct, its weights), or a randomly
initialised model of a given shape, no weights needed: ``llama3-8b`` (Llama-3-8B's config, in
bf16 on a GPU) or ``tiny`` (a 2-layer Llama, for the tests).

    python bench/bench_scoring.py [--samples 64] [--role "John Doe"] [--json out.json]
    python bench/bench_scoring.py --device cuda --config llama3-8b [--samples 256]
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
from sarft_core.models import LoadedModel, load_model, load_tokenizer, resolve_model_dir  # noqa: E402
import sarft_core.scoring.engine as engine  # noqa: E402
from sarft_core.scoring import PACKED_BF16_RECHECK_BAND, ScoreOptions, machine_plan, score_role  # noqa: E402
from sarft_core.scoring.machine import cpu_identity  # noqa: E402
from sarft_core.scoring.engine import common_prefix_len  # noqa: E402
from sarft_core.scoring.published import published_logps  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"

# randomly initialised shapes (config only, no weights travel); the vocabulary is at least the
# embedded tokenizer's, whose ids the samples are encoded with
CONFIGS = {
    "embedded": None,
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=2048, tie_word_embeddings=True),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=False),
}
# dense bf16 tensor-core peaks from the datasheets (TFLOP/s), printed next to the measured one
GPU_BF16_DATASHEET = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0, "L4": 121.0}


def build_model(config: str, device: str) -> LoadedModel:
    """The embedded model (float32 on the CPU, bf16 on a GPU), or a random one of a known shape."""
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if CONFIGS[config] is None:
        return load_model(None, dtype="float32" if dtype == torch.float32 else "bfloat16", device=device)
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(resolve_model_dir(None)[1])
    shape = dict(CONFIGS[config])
    shape["vocab_size"] = max(shape.get("vocab_size", 0), len(tok))
    cfg = LlamaConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **shape)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised directly in its dtype, on its device
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    return LoadedModel(model=model, tokenizer=tok, spec=f"random {config} ({dtype})", path="", fingerprint=f"random-{config}-{dtype}-seed0")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gpu_bf16_peak(n: int = 8192, repeats: int = 10) -> float:
    """Best measured GFLOP/s of an n x n x n bf16 matmul on the current GPU."""
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    torch.mm(a, b)
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def describe_machine(lm, device: str) -> dict:
    """CPU model, ISA flags, the fast mode's plan here, and the matmul peaks (printed and returned)."""
    ident = cpu_identity()
    info = {"cpu": ident["model"], "vendor": ident["vendor"], "isa": ident["isa"], "torch_cpu_capability": ident["capability"],
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(f"cpu {ident['model']} ({ident['vendor']}), ISA {' '.join(ident['isa']) or '(none of interest)'}, "
          f"torch capability {ident['capability']}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if device == "cpu":
        peak32, peaks = fp32_peak()
        peak16 = matmul_peak(torch.bfloat16, backend="onednn" if "onednn" in peaks else "torch")
        print("fp32 matmul peak here: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
              + f" GFLOP/s (the best counts); bf16 {peak16:.0f} GFLOP/s ({peak16 / peak32:.1f}x fp32)")
        decision = machine_plan(lm)
        print(f"fast-mode plan: {decision.describe() if decision is not None else 'bf16 copy + fp32 re-check (no packed path)'}")
        info.update(peak_fp32_gflops=peak32, peak_fp32_by_backend=peaks, peak_bf16_gflops=peak16,
                    plan=decision.plan if decision is not None else "bf16-copy",
                    plan_detail=decision.describe() if decision is not None else None)
    else:
        name = torch.cuda.get_device_name()
        peak16 = gpu_bf16_peak()
        sheet = next((v for k, v in GPU_BF16_DATASHEET.items() if k in name), None)
        print(f"gpu {name}: bf16 matmul peak measured {peak16 / 1e3:.0f} TFLOP/s"
              + (f" (datasheet {sheet:.0f} dense)" if sheet else "") + "; the engine runs the model's own bf16 (generic path)")
        info.update(gpu=name, peak_bf16_gflops=peak16, peak_bf16_datasheet_tflops=sheet, plan="bf16 model")
    return info


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


def timed(fn, device: str = "cpu"):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--role", default="John Doe")
    ap.add_argument("--data", default=str(SHARED / "rolebench" / "role-generalization" / "role_specific" / "test.jsonl"))
    ap.add_argument("--profiles", default=str(SHARED / "profiles" / "role_prompts.json"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repetitions; the best time of each side counts")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (the model in bf16 on the GPU)")
    ap.add_argument("--config", default="embedded", choices=sorted(CONFIGS),
                    help="the embedded model, or a randomly initialised one of that shape (no weights)")
    ap.add_argument("--batch-size", type=int, default=8, help="the published scorer's batch (8 as released)")
    args = ap.parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch here")
    on_cpu = device == "cpu"

    torch.manual_seed(0)
    lm = build_model(args.config, device)
    profile = get_profile(load_profiles(args.profiles), args.role)
    samples = load_samples(args.data, role=profile.name, limit=args.samples)
    n = len(samples)
    tok = lm.tokenizer
    print(f"model {lm.spec}, role {profile.name}, {n} samples, device {device}")
    machine = describe_machine(lm, device)
    peak = machine["peak_fp32_gflops"] if on_cpu else machine["peak_bf16_gflops"]
    peak_name = "fp32 matmul peak" if on_cpu else "bf16 matmul peak (MFU)"

    systems = {"role": profile.role_prompt, "unsafe": profile.unsafe_prompt, "ref": ""}
    enc = {k: [encode(tok, s, x.input, x.output) for x in samples] for k, s in systems.items()}
    prompts = {k: [e.prompt_ids for e in v] for k, v in enc.items()}
    answers = [e.answer_ids for e in enc["role"]]
    mean_tokens = sum(len(p) + len(a) for p, a in zip(prompts["role"], answers)) / n
    print(f"mean tokens per sequence (role prompt + answer): {mean_tokens:.0f}")

    # the published method scores its passes only: no reworded passes on either side
    configs = {"two": ScoreOptions(passes=("role", "unsafe"), wordings=0), "three": ScoreOptions(wordings=0)}
    if on_cpu:  # the fast mode and the bf16 screen are about the float32 model on the CPU
        configs.update({
            "fast": ScoreOptions(passes=("role", "unsafe"), fast=True, wordings=0),
            "screen": ScoreOptions(passes=("role", "unsafe"), fast=True, recheck_band=PACKED_BF16_RECHECK_BAND, wordings=0),
            "screen-raw": ScoreOptions(passes=("role", "unsafe"), fast=True, recheck_band=0.0, wordings=0),
        })
    publish = lambda k, subset=samples: published_logps(lm.model, tok, systems[k], subset, batch_size=args.batch_size)  # noqa: E731

    # warm-up of both paths on a few samples (allocator, thread pools, kernels)
    publish("role", samples[:8])
    for options in configs.values():
        score_role(lm, samples[:8], profile, options, use_cache=False)

    repeats = args.repeats
    pub, t_pub = {}, {k: math.inf for k in ("role", "unsafe", "ref")}
    engine_runs: dict = {}

    def run_engine(label, options):
        result, t = timed(lambda: score_role(lm, samples, profile, options, use_cache=False), device)
        best = engine_runs.get(label)
        if best is None or t < best[1]:
            engine_runs[label] = (result, t)

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
            pub[k], t = timed(lambda k=k: publish(k), device)
            t_pub[k] = min(t_pub[k], t)
            if k == "unsafe":
                run_engine("two", configs["two"])
        for label in configs:
            if label != "two":
                run_engine(label, configs[label])
        if on_cpu:
            run_mkl()
    report = {"samples": n, "role": profile.name, "device": device, "config": args.config, "model": lm.spec,
              "machine": machine, "repeats": repeats}

    def compare(label, passes, options, key):
        result, t = engine_runs[key]
        df = result.frame()
        t_ref = sum(t_pub[p] for p in passes)
        flops = engine_flops(lm.model, {p: prompts[p] for p in passes}, answers)
        pflops = sum(published_flops(lm.model, prompts[p], answers, args.batch_size) for p in passes)
        deltas = {p: max(abs(a - b) for a, b in zip(pub[p], df[f"logp_{p}"])) for p in passes}
        pub_flags = [u > r for u, r in zip(pub["unsafe"], pub["role"])]
        agree = sum(a == b for a, b in zip(pub_flags, df.harmful))
        row = {
            "published_samples_per_s": n / t_ref, "engine_samples_per_s": n / t, "speedup": t_ref / t,
            "engine_gflops": flops / t / 1e9, "engine_gflop_per_sample": flops / n / 1e9,
            "published_gflop_per_sample": pflops / n / 1e9, "published_gflops": pflops / t_ref / 1e9,
            "engine_vs_peak": flops / t / 1e9 / peak, "published_vs_peak": pflops / t_ref / 1e9 / peak,
            "max_abs_delta": deltas, "flags_identical": agree == n, "flag_agreement": agree / n,
            "flagged_fraction": float(df.harmful.mean()), "rechecked": result.stats["rechecked"], "path": result.stats["path"],
        }
        print(
            f"\n[{label}] published {row['published_samples_per_s']:.2f} samples/s "
            f"({row['published_gflop_per_sample']:.1f} GFLOP/sample, {row['published_gflops']:.0f} GFLOP/s = "
            f"{100 * row['published_vs_peak']:.0f}% of the {peak_name}) | "
            f"engine {row['engine_samples_per_s']:.2f} samples/s ({row['engine_gflop_per_sample']:.1f} GFLOP/sample) | "
            f"speed-up x{row['speedup']:.2f}\n  engine achieves {row['engine_gflops']:.0f} GFLOP/s = "
            f"{100 * row['engine_vs_peak']:.0f}% of the {peak_name}; "
            f"max |delta| " + ", ".join(f"{p} {d:.2e}" for p, d in deltas.items())
            + f"; flags identical: {row['flags_identical']} ({agree}/{n}); flagged {100 * row['flagged_fraction']:.1f}%"
            + (f"; path {row['path']}, re-checked in fp32: {row['rechecked']}" if options.fast else "")
        )
        return row, df

    report["two_passes"], exact2 = compare(f"two passes (role, unsafe), {lm.dtype}", ("role", "unsafe"), configs["two"], "two")
    report["three_passes"], _ = compare(f"three passes (ref, role, unsafe), {lm.dtype}", ("role", "unsafe", "ref"), configs["three"], "three")
    if on_cpu:
        t_two_pub = sum(t_pub[p] for p in ("role", "unsafe"))
        exact_margin = exact2.logp_unsafe - exact2.logp_role
        mkl_t = engine_runs["two-mkl"][1]
        print(f"\nengine with MKL's GEMM instead of oneDNN (SARFT_ONEDNN=0), two passes: x{t_two_pub / mkl_t:.2f} vs published; "
              f"oneDNN makes the engine {mkl_t / engine_runs['two'][1]:.2f}x faster")
        report["two_passes_mkl_speedup"] = t_two_pub / mkl_t
        raw_df = engine_runs["screen-raw"][0].frame()
        drift = ((raw_df.logp_unsafe - raw_df.logp_role) - exact_margin).abs()
        flips = int((raw_df.harmful != exact2.harmful).sum())
        print(f"bf16 screen alone (packed, bf16 weights, no re-check): x{t_two_pub / engine_runs['screen-raw'][1]:.2f} vs published "
              f"({engine_runs['screen-raw'][1] / engine_runs['two'][1]:.2f}x the exact time), "
              f"max |delta margin| vs fp32 {drift.max():.4f}, flags flipped {flips}/{n}")
        report["bf16_screen_raw_speedup"] = t_two_pub / engine_runs["screen-raw"][1]
        report["bf16_screen_raw_vs_exact_time"] = engine_runs["screen-raw"][1] / engine_runs["two"][1]
        report["bf16_margin_drift_max"] = float(drift.max())
        report["bf16_flips_without_recheck"] = flips
        report["bf16_screen_two_passes"], screen_df = compare(
            f"bf16 screen + fp32 re-check within {PACKED_BF16_RECHECK_BAND}, two passes", ("role", "unsafe"), configs["screen"], "screen")
        report["fast_two_passes"], fast_df = compare(
            f"fast mode (--dtype bfloat16; plan here: {machine['plan']}), two passes", ("role", "unsafe"), configs["fast"], "fast")
        same = bool((fast_df.harmful == exact2.harmful).all()) and bool((screen_df.harmful == exact2.harmful).all())
        print(f"  fast-mode and screen flags identical to the fp32 engine's: {same}")
        report["fast_flags_identical_to_fp32"] = same
        print(f"\nfp32 matmul peak re-measured at the end: {fp32_peak()[0]:.0f} GFLOP/s (start: {peak:.0f})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
