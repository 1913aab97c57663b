"""`score`: RDS scores of every sample of one role."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from sarft_core.cli._args import add_data_args, add_model_args, check_output, parse_columns
from sarft_core.cli._config_args import Option, add_config_options, config_from_args
from sarft_core.errors import SarftError


SCORE_TYPES = (".parquet", ".jsonl", ".csv")

# the scoring options: defaults, types and allowed values come from ScoreOptions
SCORE_OPTIONS = {
    "normalise": Option("per-token mean (as published) or sum of answer log-probs"),
    "max_batch_tokens": Option("token budget of one forward batch (default: 1024 on the CPU, 16384 on a GPU)", flags=("--batch-tokens",)),
    "recheck_band": Option("fast mode (--dtype bfloat16) only: re-score in fp32 samples whose |s_unsafe - s_role| is within this band (>= 0; 0 disables). "
                           "Default: 0.04 with a bf16 copy of the model; for Llama-family models on the CPU the machine decides "
                           "(a bf16 screen with a 0.03 band where bf16 matmuls are much faster than fp32, as with AMX, else the exact path) unless a band is given"),
    "backend": Option("torch: this project's engine (exact fp32 flags; fast mode with --dtype bfloat16); vllm: vLLM's prompt_logprobs "
                      "where vLLM is installed (GPUs, big models), in the --dtype given"),
    "tensor_parallel": Option("--backend vllm: GPUs per model"),
    "wordings": Option("how sure each flag is: score the answers under this many rewordings of the unsafe instruction besides the "
                       "published one; margin_se is the margin's spread over them (0: a block bootstrap over the answer's tokens, "
                       "free but less reliable; docs/flags.md)"),
}


# the validation's options (score --validate): defaults and ranges come from ValidateOptions
VALIDATE_OPTIONS = {
    "validate_prompts": Option("held-out harmful prompts whose refusal the influence measures: {allowed}"),
    "validate_n": Option("how many of them"),
    "validate_top": Option("precision of the flags among this top fraction of samples by measured erosion"),
}


def register(subparsers) -> None:
    from sarft_core.scoring import ScoreOptions
    from sarft_core.scoring.validate import ValidateOptions

    p = subparsers.add_parser("score", help="RDS: score samples under ref / role / unsafe prompts", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--out", required=True, help="output file (.jsonl, .parquet or .csv)")
    add_config_options(p, ScoreOptions, SCORE_OPTIONS)
    p.add_argument("--no-cache", action="store_true", help="ignore cached scores and compute afresh")
    p.add_argument("--with-tokens", action="store_true", help="also write OUT.tokens.jsonl with per-token log-ratios (unsafe - role)")
    p.add_argument("--validate", action="store_true",
                   help="also measure each sample's influence on refusal of held-out harmful prompts (an `influence` column) and "
                        "how far the flags agree with it (OUT.validation.json)")
    add_config_options(p, ValidateOptions, VALIDATE_OPTIONS)
    p.set_defaults(func=run)


def load_role_inputs(args):
    """Samples and profile of the chosen role, from the given files or the demo data."""
    from sarft_core.data import DEMO_PROFILES, DEMO_SAMPLES, get_profile, load_profiles, load_samples

    data = Path(args.data) if args.data else DEMO_SAMPLES
    profiles = load_profiles(args.profiles or DEMO_PROFILES)
    profile = get_profile(profiles, args.role)
    samples = load_samples(data, role=profile.name, columns=parse_columns(args.columns), answer_index=args.answer_index, limit=args.limit)
    return samples, profile


def run(args) -> int:
    from tqdm import tqdm

    from sarft_core.models import load_model
    from sarft_core.scoring import ScoreOptions, score_role
    from sarft_core.scoring.validate import ValidateOptions, validate_flags
    from sarft_core.store import Progress, write_table

    from sarft_core.models import check_device

    out = Path(args.out).expanduser()
    inputs = {"--data": args.data, "--profiles": args.profiles}
    check_output(out, inputs, writable=False, types=SCORE_TYPES)
    from sarft_core import audit

    tokens_out = audit.tokens_path(out)
    validation_out = audit.validation_path(out)
    if args.with_tokens:
        check_output(tokens_out, inputs, writable=False)
    if args.validate:
        check_output(validation_out, inputs, writable=False)
    check_device(args.device)
    samples, profile = load_role_inputs(args)
    # the output location is checked before the long work, not after it
    check_output(out, inputs, types=SCORE_TYPES)
    if args.with_tokens:
        check_output(tokens_out, inputs)
    if args.validate:
        check_output(validation_out, inputs)
    fast = args.dtype == "bfloat16" and args.backend == "torch"  # vLLM takes the precision as given
    options = dataclasses.replace(config_from_args(ScoreOptions, args), fast=fast)
    options.validate()  # before the model loads
    validate_options = config_from_args(ValidateOptions, args)
    validate_options.validate()
    if args.validate and args.backend != "torch":
        raise SarftError("--validate needs gradients, which only this engine gives", "use --backend torch with --validate")
    lm = load_model(args.model, dtype="float32" if fast else args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    if int(os.environ.get("RANK", "0")) == 0:
        from sarft_core.runconfig import record_model

        record_model(out.parent, lm.spec, lm.fingerprint, "score")  # a score run's job (RUN/scores.parquet) records what ran
    # under `accelerate launch` / torchrun every process scores its share; the first one reports
    main_process = int(os.environ.get("RANK", "0")) == 0
    bar = tqdm(total=len(samples), desc=f"RDS {profile.name}", unit="sample", file=sys.stderr, disable=not main_process)
    report = Progress(unit="sample", phase=f"RDS {profile.name}") if main_process else None

    def progress(done, total):
        if report is not None:
            report(done, total)
        bar.n = round(done, 1)
        bar.refresh()

    try:
        result = score_role(lm, samples, profile, options, use_cache=not args.no_cache, progress=progress)
    finally:
        bar.close()
    if not main_process:
        return 0
    frame = result.frame()
    validation = None
    if args.validate:
        if fast:  # the influence needs the exact float32 weights
            lm = load_model(args.model, dtype="float32", device=args.device, trust_remote_code=args.trust_remote_code)
        validation = validate_flags(lm, samples, result.rows, validate_options, use_cache=not args.no_cache,
                                    progress=lambda phase: print(f"validation: {phase}", file=sys.stderr, flush=True))
        frame["influence"] = [validation["influence"][sid] for sid in frame["id"]]
    write_table(frame, out)
    if validation is not None:
        audit.write_validation(out, validation["summary"])
    if args.with_tokens:
        audit.write_token_ratios(out, result, lm.tokenizer)
    for path in audit.stale_side_files(out):  # e.g. another role's review left in this folder
        print(f"note: {audit.stale_note(path)}", file=sys.stderr)
    st = result.stats
    speed = f"{st['samples_per_s']:.2f} samples/s" if st.get("samples_per_s") else "all from cache"
    print(
        f"{profile.name}: {st['samples']} samples, {st['flagged']} flagged ({100 * st['flagged_fraction']:.1f}%; "
        f"with 95% confidence: {st['verdicts']['flagged']} flagged, {st['verdicts']['uncertain']} uncertain, {st['verdicts']['kept']} kept), "
        f"{st['seconds']:.1f} s, {speed}; from cache {st['from_cache']}, "
        + (f"re-scored {st['damaged_records']} damaged cache record(s), " if st.get("damaged_records") else "")
        + (f"fast path {st['path']}, re-checked in fp32 {st['rechecked']}, " if fast else "")
        + f"prompts truncated {st['prompt_truncated']}, answers truncated {st['answer_truncated']} -> {out}"
    )
    if fast:
        print(f"fast-mode plan: {st['plan']}")
    if validation is not None:
        v = validation["summary"]
        print(f"validation ({v['settings']['prompts']} held-out harmful prompts, {v['settings']['validate_prompts']}): "
              f"Spearman(margin, measured erosion) {v['spearman']:+.2f} [{v['spearman_ci'][0]:+.2f}, {v['spearman_ci'][1]:+.2f}]; "
              f"flags among the top {v['top_k']} by erosion {100 * v['precision_at_k']:.0f}% (flagged overall "
              f"{100 * v['flagged_fraction']:.0f}%) -> {validation_out}")
        print(v["reading"])
    return 0
