"""RDS scoring against the peer a user would pick instead: vLLM (CPU build), in one run.

Same samples (50 RoleGPT answers of Freddy Krueger by default), the two passes the flag needs
(role and unsafe system prompts), the embedded model, model load excluded, best of ``--repeats``:

- the published scorer, faithfully re-implemented (:mod:`sarft_core.scoring.published`);
- this engine, exact IEEE fp32 and fast mode (``--dtype bfloat16``'s plan on this machine);
- vLLM with ``prompt_logprobs`` and automatic prefix caching, fp32 and bf16, run in its own
  virtual environment (``bash scripts/setup_vllm.sh``; vLLM pins its own torch and transformers),
  fed the very token ids this side encodes.

Printed: samples/s, the ratio to the published scorer and to vLLM's best, the largest log-prob
difference to the exact engine and the flag agreement with it (flag = s_unsafe > s_role).

    python bench/bench_vs_vllm.py [--samples 50] [--role "Freddy Krueger"] [--vllm-python .venv-vllm/bin/python]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarft_core.chat import encode  # noqa: E402
from sarft_core.data import get_profile, load_profiles, load_samples  # noqa: E402
from sarft_core.models import load_model, resolve_model_dir  # noqa: E402
from sarft_core.scoring import ScoreOptions, machine_plan, score_role  # noqa: E402
from sarft_core.scoring.machine import cpu_identity  # noqa: E402
from sarft_core.scoring.published import published_logps  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
PASSES = ("role", "unsafe")


def best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def run_vllm(python: Path, model_dir: Path, dtype: str, sequences: list[dict], repeats: int, threads: int) -> dict:
    """Score the sequences in vLLM's venv; {"scores", "seconds", ...} or {"error"}."""
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"model": str(model_dir), "dtype": dtype, "repeats": repeats, "sequences": sequences}))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="2")
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([str(python), str(ROOT / "bench" / "vllm_worker.py"), str(job)], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-1500:]}
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(last[-1]) if last else {"error": proc.stdout[-1500:]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--role", default="Freddy Krueger")
    ap.add_argument("--data", default=str(SHARED / "rolebench" / "instruction-generalization" / "role_specific" / "rolegpt_baseline.jsonl"))
    ap.add_argument("--profiles", default=str(SHARED / "profiles" / "role_prompts.json"))
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"), help="the python of vLLM's venv (scripts/setup_vllm.sh)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()

    lm = load_model("embedded", dtype="float32", device="cpu")
    model_dir = resolve_model_dir("embedded")[1]
    profile = get_profile(load_profiles(args.profiles), args.role)
    samples = load_samples(args.data, role=profile.name, limit=args.samples)
    n = len(samples)
    plan = machine_plan(lm)
    cpu = cpu_identity()
    print(f"CPU {cpu['vendor']} {cpu['model']} (ISA {', '.join(cpu['isa'])}); torch {torch.__version__}, {threads} threads")
    print(f"fast mode's plan here: {plan.describe() if plan else 'exact (no packed CPU path)'}")
    print(f"{n} samples of {profile.name}, passes {', '.join(PASSES)}, model {lm.spec}")

    systems = {"role": profile.role_prompt, "unsafe": profile.unsafe_prompt}
    enc = {k: [encode(lm.tokenizer, s, x.input, x.output) for x in samples] for k, s in systems.items()}
    sequences = [{"ids": e.prompt_ids + e.answer_ids, "answer_start": len(e.prompt_ids)} for k in PASSES for e in enc[k]]

    rows: dict[str, dict] = {}
    # warm-up: allocator, thread pools, kernels
    published_logps(lm.model, lm.tokenizer, systems["role"], samples[:8])
    for fast in (False, True):
        score_role(lm, samples[:8], profile, ScoreOptions(passes=PASSES, fast=fast, wordings=0), use_cache=False)

    pub, t = best_time(lambda: {k: published_logps(lm.model, lm.tokenizer, systems[k], samples) for k in PASSES}, args.repeats)
    rows["published scorer (re-implementation)"] = {"logp": pub, "seconds": t}
    for label, fast in (("this engine, exact fp32", False), ("this engine, fast mode", True)):
        res, t = best_time(lambda fast=fast: score_role(lm, samples, profile, ScoreOptions(passes=PASSES, fast=fast, wordings=0), use_cache=False), args.repeats)
        df = res.frame()
        rows[label] = {"logp": {k: [float(v) for v in df[f"logp_{k}"]] for k in PASSES}, "seconds": t, "path": res.stats.get("path")}

    python = Path(args.vllm_python)
    vllm_info = {}
    if not python.is_file():
        print(f"\nvLLM: no interpreter at {python}; set it up with `bash scripts/setup_vllm.sh` (or pass --vllm-python). vLLM rows skipped.")
    else:
        for dtype in ("float32", "bfloat16"):
            out = run_vllm(python, model_dir, dtype, sequences, args.repeats, threads)
            if "error" in out:
                print(f"\nvLLM {dtype} failed:\n{out['error']}")
                continue
            s = out["scores"]
            rows[f"vLLM-CPU, {dtype}"] = {"logp": {"role": s[:n], "unsafe": s[n:]}, "seconds": out["seconds"], "load_seconds": out["load_seconds"]}
            vllm_info = {k: out[k] for k in ("vllm", "torch", "transformers")}
        if vllm_info:
            print(f"\nvLLM side: vllm {vllm_info['vllm']}, torch {vllm_info['torch']}, transformers {vllm_info['transformers']}")

    exact = rows["this engine, exact fp32"]["logp"]
    exact_flags = [u > r for u, r in zip(exact["unsafe"], exact["role"])]
    t_pub = rows["published scorer (re-implementation)"]["seconds"]
    vllm_best = min((r["seconds"] for k, r in rows.items() if k.startswith("vLLM")), default=None)
    print("\n| scorer | samples/s | vs published | vs vLLM's best | max abs delta logp vs exact | flags vs exact fp32 |")
    print("|---|---|---|---|---|---|")
    report = {"samples": n, "role": profile.name, "cpu": cpu, "threads": threads, "plan": plan.plan if plan else "exact", "vllm": vllm_info, "rows": {}}
    for label, r in rows.items():
        flags = [u > q for u, q in zip(r["logp"]["unsafe"], r["logp"]["role"])]
        agree = sum(a == b for a, b in zip(flags, exact_flags))
        delta = max(abs(a - b) for k in PASSES for a, b in zip(r["logp"][k], exact[k]))
        row = {"samples_per_s": n / r["seconds"], "vs_published": t_pub / r["seconds"],
               "vs_vllm_best": (vllm_best / r["seconds"]) if vllm_best else None, "max_abs_delta": delta, "flags_agree": agree}
        report["rows"][label] = row
        vs_v = f"{row['vs_vllm_best']:.2f}x" if vllm_best else "–"
        print(f"| {label} | {row['samples_per_s']:.2f} | {row['vs_published']:.2f}x | {vs_v} | {delta:.1e} | {agree}/{n} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
