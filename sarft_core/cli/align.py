"""`align`: build the safety-aligned embedded model (the `embedded-aligned` model spec)."""
from __future__ import annotations

import argparse
import sys

from sarft_core.cli._config_args import Option, add_config_options, config_from_args


# the training options: defaults and types come from AlignConfig (its ranges are checked by AlignConfig.validate)
OPTIONS = {name: Option() for name in ("seed", "epochs", "lr", "batch_size", "grad_accum", "lora_r", "lora_alpha")}
OPTIONS["benign_general"] = Option("RoleBench general instructions to self-distil")
OPTIONS["distill_tokens"] = Option("length limit of the self-distilled answers")


def register(subparsers) -> None:
    from sarft_core.alignment import ALIGN_DIR, AlignConfig

    p = subparsers.add_parser(
        "align", help="fine-tune the embedded SmolLM2 to refuse harmful requests (the adapter behind --model embedded-aligned)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help=f"where adapter/ and manifest.json go ({ALIGN_DIR.relative_to(ALIGN_DIR.parents[1])} replaces the shipped adapter)")
    p.add_argument("--model", default="embedded", help="the base model to align (default: raw SmolLM2, `embedded`)")
    p.add_argument("--data-dir", default=None, help="folder with safety/advbench_harmful_behaviors.csv and rolebench/ (default: $SARFT_DATA_DIR or ../shared/data)")
    add_config_options(p, AlignConfig, OPTIONS)
    p.set_defaults(func=run)


def run(args) -> int:
    from sarft_core.alignment import AlignConfig, align

    cfg = config_from_args(AlignConfig, args)
    manifest = align(cfg, args.out, data_dir=args.data_dir, base_model=args.model, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"aligned adapter written to {args.out}/adapter ({manifest['training']['steps']} steps); "
          "measure it with: python bench/bench_aligned.py")
    return 0
