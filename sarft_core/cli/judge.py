"""`judge`: grade responses produced anywhere (CSV / JSONL / parquet) with any judge."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sarft_core.cli._judge_args import add_judge_args, build_judges, tqdm_progress
from sarft_core.errors import SarftError


def register(subparsers) -> None:
    p = subparsers.add_parser("judge", help="label (prompt, response) rows as refusal / partial / compliance / invalid", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--in", dest="inp", required=True, help="input file (.csv, .jsonl or .parquet)")
    p.add_argument("--prompt-col", default="prompt")
    p.add_argument("--response-col", default="response")
    p.add_argument("--out", required=True, help="output file (.csv, .jsonl or .parquet): the input rows plus label, refusal (full or partial) and the judge's confidence where it has one")
    p.add_argument("--device", default="auto", help="classifier judge: auto, cpu, cuda ...")
    add_judge_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from sarft_core.evaluation.metrics import REFUSAL, UNKNOWN, is_refusal, rate
    from sarft_core.store import read_table, write_table

    out = Path(args.out)
    from sarft_core.cli._args import check_output

    check_output(out, {"--in": args.inp}, types=(".csv", ".jsonl", ".parquet"))  # before any judging
    df = read_table(args.inp)
    missing = [c for c in (args.prompt_col, args.response_col) if c not in df.columns]
    if missing:
        raise SarftError(f"{args.inp}: no column {', '.join(missing)} (columns: {', '.join(map(str, df.columns))})", "name them with --prompt-col / --response-col")
    judges = build_judges(args)
    if len(judges) != 1:
        raise SarftError("the judge command takes one judge", "pass a single --judge (run it again for another)")
    judge = judges[0]
    prompts = df[args.prompt_col].fillna("").astype(str).tolist()
    responses = df[args.response_col].fillna("").astype(str).tolist()
    labels, confidences = judge.judge_scored(prompts, responses, progress=tqdm_progress(f"judging ({judge.name})", len(df)))
    df["label"] = labels
    df["refusal"] = [is_refusal(lab) for lab in labels]
    if any(c is not None for c in confidences):
        df["confidence"] = confidences
    write_table(df, out)
    stats = rate(labels, REFUSAL)
    unknown = sum(1 for lab in labels if lab == UNKNOWN)
    print(f"{len(df)} rows judged by {judge.name}: refusal rate {100 * stats['value']:.1f}% "
          f"[{100 * stats['ci_low']:.1f}, {100 * stats['ci_high']:.1f}] over {stats['n']} rows, {unknown} unknown -> {out}", file=sys.stderr)
    return 0
