"""`train`: SaRFT (RBO), SFT, the Random / FLIP ablations and the SPPFT / SEAL / Bi-Selection baselines.

Works directly or under `accelerate launch --config_file configs/accelerate/<cfg>.yaml -m sarft_core train ...`.
"""
from __future__ import annotations

import argparse
import os
import sys

from sarft_core.cli import add_data_args, add_model_args, parse_columns
from sarft_core.errors import SarftError


def register(subparsers) -> None:
    from sarft_core.training.run import ATTENTION, METHODS, PEFT_KINDS, REPORT_TO, SAMPLING

    p = subparsers.add_parser("train", help="fine-tune on one role: sft, sarft, random, flip, sppft, seal, biselect",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--method", default="sarft", choices=METHODS, help="training method")
    add_data_args(p)
    p._option_string_actions["--role"].required = False  # not needed with --resume
    add_model_args(p)
    p.add_argument("--out", required=True, help="run directory (created; with --resume: the run to continue)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (its stored options are used)")
    p.add_argument("--peft", default="lora", choices=PEFT_KINDS, help="LoRA adapter or full fine-tuning")
    p.add_argument("--lambda", dest="lam", type=float, default=0.5, help="weight of the KL term (published example 0.5; ignored by sft/sppft)")
    p.add_argument("--kl-direction", default="ref||theta", help="ref||theta (released code) or theta||ref (paper's formula)")
    p.add_argument("--ref-dtype", default="same", choices=["same", "bfloat16"],
                   help="precision of the no-grad reference forward: the policy's own, or bf16 autocast (faster on CPUs with bf16 matmuls; the published setup trained in bf16)")
    p.add_argument("--autocast", default="auto", choices=["auto", "bf16", "off"],
                   help="mixed precision: auto = bf16 on a CUDA GPU that has it; bf16 = also on the CPU (about 2x where the CPU has bf16 matmuls)")
    p.add_argument("--sampling", default="random", choices=SAMPLING,
                   help="sample order: random (published) or group_by_length (shuffled batches of similar length: less padding, same samples)")
    p.add_argument("--attention", default="auto", choices=ATTENTION,
                   help="attention kernel while training: auto = eager on the CPU (faster backward on short sequences), sdpa on a GPU")
    p.add_argument("--normalisation", default="answer", help="answer (answer tokens only) or published (the released code's)")
    p.add_argument("--tau", type=float, default=0.0, help="flag threshold on s_unsafe - s_role")
    p.add_argument("--overrides", default=None, help="JSON {sample_id: true/false}; default: overrides.json beside the cached scores, if any")
    p.add_argument("--seed", type=int, default=0, help="seed for data order, LoRA init and the random ablation")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-4 for LoRA, 2e-5 for full as published); constant schedule")
    p.add_argument("--batch-size", type=int, default=4, help="per-device micro-batch")
    p.add_argument("--grad-accum", type=int, default=8, help="gradient accumulation (4 x 8 = the published effective batch of 32 on one device)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (overrides --epochs)")
    p.add_argument("--save-steps", type=int, default=50, help="checkpoint every N optimizer steps")
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--lora-alpha", type=int, default=64)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--lora-targets", default="q_proj,v_proj", help="comma-separated module names")
    p.add_argument("--freeze-layers", default=None, help="sppft: freeze this inclusive 0-based layer range instead of detecting it, e.g. 6-12")
    p.add_argument("--drop-fraction", type=float, default=0.2, help="seal/biselect: fraction of samples selected")
    p.add_argument("--baseline-use", default="drop", help="seal/biselect: drop the selected samples (SFT on the rest) or use them as D_h (kl)")
    p.add_argument("--report-to", default="none", metavar="TRACKER",
                   help=f"log the Trainer's loss to an experiment tracker: {', '.join(REPORT_TO)} (its package must be installed)")
    p.set_defaults(func=run)


def config_from_args(args):
    from sarft_core.training import TrainConfig

    return TrainConfig(
        method=args.method, role=args.role or "", data=args.data, profiles=args.profiles, columns=parse_columns(args.columns),
        answer_index=args.answer_index, limit=args.limit, model=args.model or "", dtype=args.dtype, device=args.device,
        trust_remote_code=args.trust_remote_code, peft=args.peft, lam=args.lam, kl_direction=args.kl_direction, ref_dtype=args.ref_dtype, autocast=args.autocast,
        normalisation=args.normalisation, sampling=args.sampling, attention=args.attention, tau=args.tau, overrides=args.overrides, seed=args.seed, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum, max_steps=args.max_steps,
        save_steps=args.save_steps, lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_targets=[t.strip() for t in args.lora_targets.split(",") if t.strip()], freeze_layers=args.freeze_layers,
        drop_fraction=args.drop_fraction, baseline_use=args.baseline_use, report_to=args.report_to,
    )


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
