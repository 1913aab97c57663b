"""`align`: build the safety-aligned embedded model (the `embedded-aligned` model spec)."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from sarft_core.alignment import ALIGN_DIR, AlignConfig

    d = AlignConfig()
    p = subparsers.add_parser(
        "align", help="fine-tune the embedded SmolLM2 to refuse harmful requests (the adapter behind --model embedded-aligned)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help=f"where adapter/ and manifest.json go ({ALIGN_DIR.relative_to(ALIGN_DIR.parents[1])} replaces the shipped adapter)")
    p.add_argument("--model", default="embedded", help="the base model to align (default: raw SmolLM2, `embedded`)")
    p.add_argument("--data-dir", default=None, help="folder with safety/advbench_harmful_behaviors.csv and rolebench/ (default: $SARFT_DATA_DIR or ../shared/data)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--benign-general", type=int, default=d.benign_general, help="RoleBench general instructions to self-distil")
    p.add_argument("--distill-tokens", type=int, default=d.distill_tokens, help="length limit of the self-distilled answers")
    p.set_defaults(func=run)


def run(args) -> int:
    from sarft_core.alignment import AlignConfig, align

    cfg = AlignConfig(seed=args.seed, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
                      lora_r=args.lora_r, lora_alpha=args.lora_alpha, benign_general=args.benign_general,
                      distill_tokens=args.distill_tokens)
    manifest = align(cfg, args.out, data_dir=args.data_dir, base_model=args.model, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"aligned adapter written to {args.out}/adapter ({manifest['training']['steps']} steps); "
          "measure it with: python bench/bench_aligned.py")
    return 0
