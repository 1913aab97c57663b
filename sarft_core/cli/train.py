"""`train`: SaRFT (RBO), SFT, the Random / FLIP ablations and the SPPFT / SEAL / Bi-Selection baselines.

Works directly or under `accelerate launch --config_file configs/accelerate/<cfg>.yaml -m sarft_core train ...`.
"""
from __future__ import annotations

import argparse
import os
import sys

from sarft_core.cli._args import add_data_args, add_model_args, parse_columns
from sarft_core.cli._config_args import Option, add_config_options
from sarft_core.cli._config_args import config_from_args as config_from
from sarft_core.errors import SarftError


# The train-only options, in the order --help lists them: field of TrainConfig -> its wording. The
# default, type and allowed values of each are TrainConfig's (sarft_core.cli._config_args); the
# data and model options are the ones every command shares (add_data_args, add_model_args).
FIRST_OPTIONS = {"method": Option("training method")}
OPTIONS = {
    "peft": Option("LoRA adapter or full fine-tuning"),
    "lam": Option("weight of the KL term (published example 0.5; ignored by sft/sppft)", flags=("--lambda",)),
    "kl_direction": Option("ref||theta (released code) or theta||ref (paper's formula)", enforce_choices=False),
    "ref_dtype": Option("precision of the no-grad reference forward: the policy's own, or bf16 autocast (faster on CPUs with bf16 matmuls; the published setup trained in bf16)"),
    "autocast": Option("mixed precision: auto = bf16 on a CUDA GPU that has it; bf16 = also on the CPU (about 2x where the CPU has bf16 matmuls)"),
    "sampling": Option("sample order: random (published) or group_by_length (shuffled batches of similar length: less padding, same samples)"),
    "attention": Option("attention kernel while training: auto = eager on the CPU (faster backward on short sequences), sdpa on a GPU"),
    "normalisation": Option("answer (answer tokens only) or published (the released code's)", enforce_choices=False),
    "tau": Option("flag threshold on s_unsafe - s_role"),
    "overrides": Option("JSON {sample_id: true/false}; default: overrides.json beside the cached scores, if any"),
    "dh_fraction": Option("sarft/random/flip: a D_h of exactly ceil(F x n) samples: the top of the ranking (sarft), its bottom (flip) or "
                          "drawn at random (random), instead of RDS's flags"),
    "train_subset": Option("train on only the top, bottom or a random --subset-fraction of the samples by the ranking (the causal check)"),
    "subset_fraction": Option("--train-subset: the fraction kept"),
    "rank_by": Option("the ranking --dh-fraction and --train-subset use: RDS's margin, or the measured erosion of refusal (score --validate)"),
    "seed": Option("seed for data order, LoRA init and the random ablation"),
    "epochs": Option(),
    "lr": Option("learning rate (default 1e-4 for LoRA, 2e-5 for full as published); constant schedule"),
    "batch_size": Option("per-device micro-batch"),
    "grad_accum": Option("gradient accumulation (4 x 8 = the published effective batch of 32 on one device)"),
    "max_steps": Option("stop after this many optimizer steps (overrides --epochs)"),
    "save_steps": Option("checkpoint every N optimizer steps"),
    "lora_r": Option(),
    "lora_alpha": Option(type=int),  # whole numbers on the command line, as always (the config takes any positive number)
    "lora_dropout": Option(),
    "lora_targets": Option("comma-separated module names"),
    "freeze_layers": Option("sppft: freeze this inclusive 0-based layer range instead of detecting it, e.g. 6-12"),
    "drop_fraction": Option("seal/biselect: fraction of samples selected"),
    "baseline_use": Option("seal/biselect: drop the selected samples (SFT on the rest) or use them as D_h (kl)", enforce_choices=False),
    # checked by TrainConfig.validate, which also says which tracker package is missing
    "report_to": Option("log the Trainer's loss to an experiment tracker: {allowed} (its package must be installed)",
                        metavar="TRACKER", enforce_choices=False),
}
# TrainConfig fields with no option of their own: set by other commands (reproduce, survey) or left at the published values
CONFIG_ONLY = ("max_prompt_tokens", "max_answer_tokens")


def recipe_args(settings: dict) -> list[str]:
    """TrainConfig settings given by field name (a recipe such as reproduce.DEFAULT_TRAIN) as
    `train` command-line arguments."""
    from sarft_core.cli._config_args import settings_argv

    return settings_argv(settings, {**FIRST_OPTIONS, **OPTIONS})


def register(subparsers) -> None:
    from sarft_core.training.run import TrainConfig

    p = subparsers.add_parser("train", help="fine-tune on one role: sft, sarft, random, flip, sppft, seal, biselect",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_options(p, TrainConfig, FIRST_OPTIONS)
    add_data_args(p)
    p._option_string_actions["--role"].required = False  # not needed with --resume
    add_model_args(p)
    p.add_argument("--out", required=True, help="run directory (created; with --resume: the run to continue)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (its stored options are used)")
    add_config_options(p, TrainConfig, OPTIONS)
    p.set_defaults(func=run)


def config_from_args(args):
    from sarft_core.training import TrainConfig

    return config_from(TrainConfig, args, {"role": lambda v: v or "", "model": lambda v: v or "", "columns": parse_columns})


def run(args) -> int:
    from sarft_core.training import train

    cfg = config_from_args(args)
    if not args.resume:
        cfg.validate()
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    status = train(cfg, args.out, resume=args.resume, log=log)
    state = status.get("state")
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return {"completed": 0, "cancelled": 130}.get(state, 1)
    if state == "completed":
        print(f"completed: {status.get('step')} steps in {status.get('seconds', 0):.1f} s, final weights {status.get('weights')} -> {args.out}")
        return 0
    if state == "cancelled":
        where = status.get("last_checkpoint") or "no checkpoint yet"
        print(f"cancelled ({status.get('reason')}); last checkpoint: {where}. Continue with: python -m sarft_core train --resume --out {args.out}", file=sys.stderr)
        return 130
    raise SarftError(f"training ended in state {state}", "see the run's status.json")
