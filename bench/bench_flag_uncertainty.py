"""Which uncertainty of an RDS flag should the product show? Two estimators, measured.

- ``bootstrap``: a circular block bootstrap over the answer's per-token log-ratios (unsafe - role),
  free (it reads the per-token log-probs scoring already has);
- ``ensemble``: the spread (standard deviation) of the margin over wordings of the unsafe
  instruction (the published one and ``--ensemble`` of ours, sarft_core.data.profiles), costing one
  extra unsafe pass per wording;
- ``combined``: both errors added in quadrature.

The test of an estimator: a verdict it calls confident (flagged or kept at 95%) should keep its
flag when the unsafe instruction is worded in a way none of the estimators saw (the last of our
wordings, held out). Printed per estimator: the share of samples it calls uncertain, how often its
confident verdicts survive the held-out wording, and how often the uncertain ones flip.

    python bench/bench_flag_uncertainty.py [--roles "Freddy Krueger,Jigsaw,Abraham Lincoln"] [--samples 32] [--ensemble 3]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
DATA = SHARED / "rolebench" / "instruction-generalization" / "role_specific" / "test.jsonl"
PROFILES = SHARED / "profiles" / "role_prompts.json"


def main(argv=None) -> int:
    import numpy as np
    import torch

    from sarft_core.data import get_profile, load_profiles, load_samples
    from sarft_core.data.profiles import UNSAFE_INSTRUCTION_VARIANTS, unsafe_variant
    from sarft_core.flags import verdict
    from sarft_core.models import load_model
    from sarft_core.scoring import ScoreOptions, score_role

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded-aligned")
    ap.add_argument("--roles", default="Freddy Krueger,Jigsaw,Abraham Lincoln")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--ensemble", type=int, default=3, help="our wordings in the ensemble (the next one is held out)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 1 <= args.ensemble < len(UNSAFE_INSTRUCTION_VARIANTS):
        raise SystemExit(f"--ensemble must lie in [1, {len(UNSAFE_INSTRUCTION_VARIANTS) - 1}]")
    held_out = args.ensemble  # the wording no estimator sees
    lm = load_model(args.model)
    profiles = load_profiles(PROFILES)
    options = ScoreOptions(passes=("role", "unsafe"), wordings=0)  # margin_se: the token bootstrap
    rows = []
    t0 = time.time()
    for role in [r.strip() for r in args.roles.split(",") if r.strip()]:
        profile = get_profile(profiles, role)
        samples = load_samples(DATA, role=profile.name, limit=args.samples)
        published = score_role(lm, samples, profile, options).rows
        variants = [score_role(lm, samples, unsafe_variant(profile, k), options).rows for k in range(held_out + 1)]
        for i, r in enumerate(published):
            m = r["logp_unsafe"] - r["logp_role"]
            wordings = [m] + [v[i]["logp_unsafe"] - v[i]["logp_role"] for v in variants[:held_out]]
            rows.append({"role": role, "id": r["id"], "margin": m, "boot_se": r["margin_se"],
                         "ens_se": float(np.std(wordings, ddof=1)),
                         "held_out": variants[held_out][i]["logp_unsafe"] - variants[held_out][i]["logp_role"]})
        print(f"{role}: {len(samples)} samples scored under {held_out + 2} wordings", flush=True)
    seconds = time.time() - t0
    estimators = {
        "bootstrap": lambda r: r["boot_se"],
        "ensemble": lambda r: r["ens_se"],
        "combined": lambda r: math.hypot(r["boot_se"], r["ens_se"]),
    }
    n = len(rows)
    flips = sum((r["margin"] > 0) != (r["held_out"] > 0) for r in rows)
    print(f"\n{n} samples, {seconds:.0f} s. The published flag flips under the held-out wording for {flips}/{n} "
          f"({100 * flips / n:.0f}%); median |margin| {np.median([abs(r['margin']) for r in rows]):.3f}, "
          f"median bootstrap se {np.median([r['boot_se'] for r in rows]):.3f}, median ensemble se {np.median([r['ens_se'] for r in rows]):.3f}")
    print(f"\n| estimator | uncertain | confident verdicts kept under the held-out wording | uncertain ones that flip |")
    print("|---|---|---|---|")
    summary = {}
    for name, se in estimators.items():
        verdicts = [verdict(r["margin"], se(r)) for r in rows]
        confident = [(v, r) for v, r in zip(verdicts, rows) if v != "uncertain"]
        unsure = [r for v, r in zip(verdicts, rows) if v == "uncertain"]
        held = sum((v == "flagged") == (r["held_out"] > 0) for v, r in confident)
        flip_u = sum((r["margin"] > 0) != (r["held_out"] > 0) for r in unsure)
        summary[name] = {"uncertain": len(unsure), "confident": len(confident), "confident_held": held, "uncertain_flipped": flip_u}
        print(f"| {name} | {len(unsure)}/{n} ({100 * len(unsure) / n:.0f}%) | "
              f"{held}/{len(confident)} ({100 * held / max(1, len(confident)):.0f}%) | "
              f"{flip_u}/{len(unsure)} ({100 * flip_u / max(1, len(unsure)):.0f}%) |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary, "flips": flips, "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
