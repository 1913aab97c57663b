"""How far the fast mode's bfloat16 screen moves the flag margin, role by role: the evidence
behind ``PACKED_BF16_RECHECK_BAND``.

For each role it scores the same samples twice with the packed CPU forward, in IEEE float32 and
with bfloat16 weights, and prints the largest and the 99th-percentile |delta margin|
(margin = logp_unsafe - logp_role), the flags the screen alone would flip, and the share of
samples each candidate band would send back to float32.

    python bench/bench_drift.py [--samples 64] [--roles "John Doe,Tom Ripley"] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarft_core.chat import encode  # noqa: E402
from sarft_core.data import get_profile, load_profiles, load_samples  # noqa: E402
from sarft_core.models import load_model  # noqa: E402
from sarft_core.scoring import PACKED_BF16_RECHECK_BAND  # noqa: E402
from sarft_core.scoring.engine import reduce_logps, score_pass  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEFAULT_ROLES = "John Doe,Tom Ripley,Coriolanus,Lestat de Lioncourt,Jack Sparrow,John Keating"
BANDS = (0.01, 0.02, 0.03, 0.04)


def margins(model, prompts, answers, precision):
    means = {}
    for name in ("role", "unsafe"):
        logps = score_pass(model, prompts[name], answers, 0, 2048, prefix_kv_cache={}, precision=precision).token_logps
        means[name] = [reduce_logps(t) for t in logps]
    return [u - r for u, r in zip(means["unsafe"], means["role"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--roles", default=DEFAULT_ROLES)
    ap.add_argument("--data", default=str(SHARED / "rolebench" / "role-generalization" / "role_specific" / "test.jsonl"))
    ap.add_argument("--profiles", default=str(SHARED / "profiles" / "role_prompts.json"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    lm = load_model(None, dtype="float32", device="cpu")
    profiles = load_profiles(args.profiles)
    print(f"model {lm.spec}, {args.samples} samples per role, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'role':<22} {'max':>7} {'p99':>7} {'flips':>5}  " + "  ".join(f"<={b:<5}" for b in BANDS) + "   fp32 s  bf16 s")
    report, all_drift, all_exact = [], [], []
    for name in [r.strip() for r in args.roles.split(",") if r.strip()]:
        profile = get_profile(profiles, name)
        samples = load_samples(args.data, role=profile.name, limit=args.samples)
        systems = {"role": profile.role_prompt, "unsafe": profile.unsafe_prompt}
        enc = {k: [encode(lm.tokenizer, s, x.input, x.output) for x in samples] for k, s in systems.items()}
        prompts = {k: [e.prompt_ids for e in v] for k, v in enc.items()}
        answers = [e.answer_ids for e in enc["role"]]
        t0 = time.perf_counter()
        exact = margins(lm.model, prompts, answers, "float32")
        t1 = time.perf_counter()
        screen = margins(lm.model, prompts, answers, "bfloat16")
        t2 = time.perf_counter()
        drift = sorted(abs(a - b) for a, b in zip(exact, screen))
        flips = sum((a > 0) != (b > 0) for a, b in zip(exact, screen))
        within = {b: sum(abs(m) <= b for m in screen) / len(screen) for b in BANDS}
        p99 = drift[min(len(drift) - 1, int(0.99 * len(drift)))]
        print(f"{profile.name:<22} {drift[-1]:7.4f} {p99:7.4f} {flips:5d}  " + "  ".join(f"{100 * within[b]:5.0f}% " for b in BANDS)
              + f"  {t1 - t0:6.1f}  {t2 - t1:6.1f}")
        report.append({"role": profile.name, "samples": len(samples), "max_drift": drift[-1], "p99_drift": p99, "flips": flips,
                       "within_band": within, "fp32_seconds": t1 - t0, "bf16_seconds": t2 - t1})
        all_drift += drift
        all_exact += exact
    worst = max(all_drift)
    print(f"\nall {len(all_drift)} samples: max |delta margin| {worst:.4f}; the screen's band {PACKED_BF16_RECHECK_BAND} "
          f"= {PACKED_BF16_RECHECK_BAND / worst:.1f}x the largest drift; exact margins within the band: "
          f"{100 * sum(abs(m) <= PACKED_BF16_RECHECK_BAND for m in all_exact) / len(all_exact):.0f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"roles": report, "max_drift": worst, "band": PACKED_BF16_RECHECK_BAND}, indent=2))


if __name__ == "__main__":
    main()
