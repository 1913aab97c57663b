"""``score --validate`` measured: its cost, its accuracy, and what it says of RDS on this model.

For each character (default: the reproduction grid's six, their 70 training samples each, the
grid's data split), on the given model:
- RDS scores (exact float32, role and unsafe passes) and the validation (the influence of every
  sample on refusal of 32 held-out AdvBench prompts, central differences of two engine passes);
- for the first character only, the obvious way to the same numbers, one backward pass per
  sample (autograd's -grad L(z) . grad M) on ``--autograd`` samples: its time per sample against
  ours, and the largest relative difference between the two;
- the agreement of RDS's margin with measured erosion: Spearman with its bootstrap 95% interval,
  and the flags' precision among the top 30% by erosion against the flagged fraction.

    python bench/bench_validation.py [--model embedded-aligned] [--roles "Freddy Krueger,Po"] [--autograd 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def autograd_influence(lm, samples, prompts, targets) -> tuple[list[float], float]:
    """-grad L(z) . grad M by one backward pass per sample (the reference), and its seconds."""
    import torch

    from sarft_core.chat import encode
    from sarft_core.scoring.influence import margin_gradient, target_parameters

    params = target_parameters(lm.model, targets)
    _, grad_m = margin_gradient(lm.model, lm.tokenizer, prompts, params)
    before = [(p, p.requires_grad) for p in lm.model.parameters()]
    wanted = {id(p) for _, p in params}
    for p in lm.model.parameters():
        p.requires_grad_(id(p) in wanted)
    t0 = time.perf_counter()
    out = []
    for s in samples:
        e = encode(lm.tokenizer, "", s.input, s.output)
        ids = torch.tensor([e.prompt_ids + e.answer_ids])
        logits = lm.model(input_ids=ids, logits_to_keep=len(e.answer_ids) + 1).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(e.answer_ids)[:, None]).mean()
        grads = torch.autograd.grad(logp, [p for _, p in params])
        out.append(float(sum((g * m).sum() for g, m in zip(grads, grad_m))))
    seconds = time.perf_counter() - t0
    for p, flag in before:
        p.requires_grad_(flag)
    return out, seconds


def main(argv=None) -> int:
    import torch

    from sarft_core.data import get_profile, load_profiles, load_samples
    from sarft_core.models import load_model
    from sarft_core.reproduce import ReproduceConfig, write_role_data
    from sarft_core.trait_labels import GRID_BENEVOLENT, GRID_VILLAINS
    from sarft_core.scoring import ScoreOptions, score_role
    from sarft_core.scoring.influence import influences
    from sarft_core.scoring.validate import ValidateOptions, flag_agreement, validation_prompts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded-aligned")
    ap.add_argument("--roles", default=",".join(GRID_VILLAINS + GRID_BENEVOLENT))
    ap.add_argument("--autograd", type=int, default=10, help="samples of the first character scored the obvious way too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, model {args.model}", flush=True)
    lm = load_model(args.model, dtype="float32", device="cpu")
    cfg = ReproduceConfig()
    profiles = load_profiles(cfg.resolved_profiles())
    options = ValidateOptions()
    prompts = validation_prompts(options.validate_prompts, options.validate_n)
    rows_out = []
    folder = Path(tempfile.mkdtemp())
    for k, role in enumerate([r.strip() for r in args.roles.split(",") if r.strip()]):
        profile = get_profile(profiles, role)
        path, _ = write_role_data(cfg, role, folder)
        samples = load_samples(path, role=role)
        t0 = time.perf_counter()
        rows = score_role(lm, samples, profile, ScoreOptions(passes=("role", "unsafe"), wordings=0), use_cache=False).rows
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = influences(lm, samples, prompts, options.targets)
        t_validate = time.perf_counter() - t0
        margins = [r["logp_unsafe"] - r["logp_role"] for r in rows]
        agree = flag_agreement(margins, res["influence"], [m > 0 for m in margins], [s.id for s in samples], options.validate_top)
        line = {"role": role, "samples": len(samples), "score_s": t_score, "validate_s": t_validate, **agree}
        if k == 0 and args.autograd:
            ref, t_ref = autograd_influence(lm, samples[: args.autograd], prompts, options.targets)
            ours = res["influence"][: args.autograd]
            scale = max(abs(v) for v in ref)
            line["autograd_s_per_sample"] = t_ref / len(ref)
            line["max_rel_diff"] = max(abs(a - b) for a, b in zip(ours, ref)) / scale
            print(f"{role}: the obvious way (one backward per sample) {t_ref / len(ref):.2f} s/sample against ours "
                  f"{t_validate / len(samples):.2f} s/sample ({t_ref / len(ref) / (t_validate / len(samples)):.1f}x); "
                  f"largest difference {line['max_rel_diff']:.1e} of the largest influence", flush=True)
        rows_out.append(line)
        lo, hi = agree["spearman_ci"]
        print(f"{role}: {len(samples)} samples, scoring {t_score:.0f} s, validation {t_validate:.0f} s; "
              f"Spearman(margin, erosion) {agree['spearman']:+.2f} [{lo:+.2f}, {hi:+.2f}]; precision among the top "
              f"{agree['top_k']} by erosion {100 * agree['precision_at_k']:.0f}% (flagged {100 * agree['flagged_fraction']:.0f}%)", flush=True)
    print("\n| character | samples | flagged | Spearman(margin, erosion) [95% CI] | flags among top 30% by erosion | validation s |")
    print("|---|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r['role']} | {r['samples']} | {100 * r['flagged_fraction']:.0f}% | {r['spearman']:+.2f} [{r['spearman_ci'][0]:+.2f}, "
              f"{r['spearman_ci'][1]:+.2f}] | {100 * r['precision_at_k']:.0f}% | {r['validate_s']:.0f} |")
    if args.json:  # the shape data/flag_validation.json ships in (the Overview reads it)
        out = Path(args.json)
        kept = {k: v for k, v in json.loads(out.read_text()).items() if k == "causal"} if out.is_file() else {}  # bench/selection_summary.py's
        out.write_text(json.dumps({"model": lm.spec, "model_fingerprint": lm.fingerprint, "date": time.strftime("%Y-%m-%d"),
                                   "threads": args.threads, "rows": rows_out, **kept}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
