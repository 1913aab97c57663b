"""`align`: build the safety-aligned embedded model (the `embedded-aligned` model spec)."""
from __future__ import annotations

import argparse
import sys

from sarft_core.cli._config_args import Option, add_config_options, config_from_args


# the options: which AlignConfig fields (alignment.COMMAND_LINE_FIELDS), their defaults and types come from
# the config (its ranges are checked by AlignConfig.validate); only the wording is here
HELP = {
    "benign_general": "RoleBench general instructions to self-distil",
    "distill_tokens": "length limit of the self-distilled answers",
    "benign_in_character": "RoleBench in-character questions to self-distil, from characters role-play is not evaluated on",
}


def options() -> dict[str, Option]:
    from sarft_core.alignment import COMMAND_LINE_FIELDS

    return {name: Option(HELP.get(name)) for name in COMMAND_LINE_FIELDS}


def register(subparsers) -> None:
    from sarft_core.alignment import AlignConfig
    from sarft_core.data import ALIGN_DIR

    p = subparsers.add_parser(
        "align", help="fine-tune the embedded SmolLM2 to refuse harmful requests (the adapter behind --model embedded-aligned)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help=f"where adapter/ and manifest.json go ({ALIGN_DIR.relative_to(ALIGN_DIR.parents[1])} replaces the shipped adapter)")
    p.add_argument("--model", default="embedded", help="the base model to align (default: raw SmolLM2, `embedded`)")
    p.add_argument("--data-dir", default=None, help="folder with safety/advbench_harmful_behaviors.csv and rolebench/ (default: $SARFT_DATA_DIR or ../shared/data)")
    add_config_options(p, AlignConfig, options())
    p.set_defaults(func=run)


def run(args) -> int:
    from sarft_core.alignment import AlignConfig, align

    cfg = config_from_args(AlignConfig, args)
    manifest = align(cfg, args.out, data_dir=args.data_dir, base_model=args.model, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"aligned adapter written to {args.out}/adapter ({manifest['training']['steps']} steps); "
          "measure it with: python bench/bench_aligned.py")
    return 0
