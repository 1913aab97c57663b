"""`survey`: risk of many roles at once (screening: RDS flagged fraction; full: train + evaluate),
correlated with the roles' traits. Resumable: rerun the same command to continue."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from sarft_core.cli._config_args import Option, add_config_options, config_argv
from sarft_core.cli._config_args import config_from_args as derive_config
from sarft_core.errors import SarftError


# the survey's settings: defaults, types and allowed values come from SurveyConfig; --roles and
# --screen (the mode) are read by hand, --data and --profiles are resolved to absolute paths
SURVEY_OPTIONS = {
    "methods": Option("full mode: training methods to compare"),
    "peft": Option("full mode: lora or full"),
    "data": Option("sample file(s), comma-separated (e.g. RoleBench test.jsonl,rolegpt_baseline.jsonl); default: the demo samples",
                   metavar="FILES"),
    "profiles": Option("role profiles JSON (default: the demo profiles)", metavar="FILE"),
    "limit": Option("at most N samples per role", metavar="N"),
    "answer_index": Option("which RoleBench answer to use"),
    "model": Option("base model: hub id, local directory or .gguf (default: the embedded SmolLM2-135M-Instruct)", metavar="SPEC"),
    "device": Option("auto, cpu, cuda, cuda:1 ..."),
    "exact": Option("score in IEEE fp32 everywhere (default: the fast mode; on the CPU, Llama-family models score exactly anyway, "
                    "elsewhere a bf16 copy is re-checked in fp32 near the boundary)"),
    "wordings": Option("rewordings of the unsafe instruction whose spread is each flag's error, as in `score` "
                       "(0: the token bootstrap, no extra passes)", metavar="N"),
    "batch_tokens": Option("token budget of one scoring batch (default: 1024 on the CPU, 16384 on a GPU)"),
    "trait_source": Option("trait source (see `traits`)", flags=("--traits",)),
    "trait_csv": Option("annotations for --traits csv", flags=("--traits-csv",), metavar="FILE"),
    "train_args": Option("full mode: extra arguments for `train`, e.g. \"--max-steps 20\"", metavar="ARGS"),
    "validation": Option("also validate each role's flags as `score --validate` does (each sample's influence on refusal of "
                       "held-out harmful prompts): a per-role Spearman of margin with measured erosion, with its 95%% CI",
                         flags=("--validate",)),
    "eval_args": Option("full mode: arguments for `eval` (roles get --role when rolebench is asked for)", metavar="ARGS"),
}


def register(subparsers) -> None:
    from sarft_core.survey import SurveyConfig

    p = subparsers.add_parser("survey", help="many roles: flagged fraction (--screen) or safety loss after fine-tuning, vs traits",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--roles", required=True, help="comma-separated role names, or 'all' (every role of --profiles)")
    p.add_argument("--screen", action="store_true", help="screening mode: RDS flagged fraction only, no training")
    add_config_options(p, SurveyConfig, SURVEY_OPTIONS)
    p.add_argument("--workers", type=int, default=1, help="local processes working on roles in parallel")
    p.add_argument("--slurm", action="store_true", help="submit one SLURM job per pending role with submitit, then return")
    p.add_argument("--slurm-partition", default=None)
    p.add_argument("--slurm-time", type=int, default=60, help="minutes per job")
    p.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per job")
    p.add_argument("--slurm-cpus", type=int, default=4, help="CPUs per job")
    p.add_argument("--slurm-cluster", default=None, help=argparse.SUPPRESS)  # submitit's local/debug executors, for tests
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild table.csv and correlations.csv from finished roles")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per finished role)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of --workers / a SLURM job
    p.add_argument("--out", required=True, help="survey directory (created; an existing survey is resumed)")
    p.set_defaults(func=run)


def resolve_roles(text: str, profiles_path: str | None) -> list[str]:
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles

    profiles = load_profiles(profiles_path or DEMO_PROFILES)
    if text.strip().lower() == "all":
        return list(profiles)
    names = [r.strip() for r in text.split(",") if r.strip()]
    if not names:
        raise SarftError("--roles is empty", "give comma-separated role names or 'all'")
    return list(dict.fromkeys(get_profile(profiles, n).name for n in names))


def _data_files(text: str) -> list[str]:
    files = [d.strip() for d in text.split(",") if d.strip()]
    for d in files:
        if not Path(d).is_file():
            raise SarftError(f"data file does not exist: {d}", "check --data")
    return [str(Path(d).resolve()) for d in files]


def config_from_args(args, roles: list[str]):
    from sarft_core.survey import FULL, SCREEN, SurveyConfig

    if args.trait_source == "csv" and not args.trait_csv:
        raise SarftError("--traits csv needs --traits-csv FILE", "give your annotations file with --traits-csv")
    config = derive_config(SurveyConfig, args, convert={
        "roles": lambda _: roles, "data": _data_files, "profiles": lambda p: str(Path(p).resolve()) if p else ""})
    if not args.screen and not config.methods:
        raise SarftError("--methods is empty", "give e.g. --methods sft,sarft, or use --screen")
    return dataclasses.replace(config, mode=SCREEN if args.screen else FULL)


def _child_argv(args, roles: str | None = None) -> list[str]:
    """The arguments of a worker: the same survey (optionally other roles), no workers or SLURM."""
    return ["survey", *_rebuild_argv(args, roles), "--worker", "--no-progress"]


def run(args) -> int:
    from sarft_core.survey import open_survey, run_pending, run_workers, submit_slurm, write_aggregate

    from sarft_core.validation import Range, check_number

    check_number(args.workers, Range(lo=1, hi=1024, integer=True, option="--workers", hint="use --workers 1 for one process"))
    if args.slurm:
        for option, value, hi in (("--slurm-time", args.slurm_time, 60 * 24 * 365), ("--slurm-gpus", args.slurm_gpus, 1024),
                                  ("--slurm-cpus", args.slurm_cpus, 4096)):
            check_number(value, Range(lo=0 if option == "--slurm-gpus" else 1, hi=hi, integer=True, option=option))
    roles = resolve_roles(args.roles, args.profiles)
    config = config_from_args(args, roles)
    survey = open_survey(args.out, config)
    if args.aggregate_only:
        return _finish(survey, write_aggregate)
    if args.slurm:
        ids = submit_slurm(survey, lambda role: _child_argv(args, role), {
            "cluster": args.slurm_cluster, "slurm_partition": args.slurm_partition, "timeout_min": args.slurm_time,
            "gpus_per_node": args.slurm_gpus, "cpus_per_task": args.slurm_cpus, "name": "sarft-survey",
        }, slurm_job_main)
        print(f"submitted {len(ids)} job(s): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}; "
              f"when they finish: python -m sarft_core survey --roles {args.roles!r} --out {args.out} --aggregate-only"
              + (" --screen" if args.screen else ""))
        return 0

    pending = survey.pending()
    total = len(survey.config.roles)
    if not args.worker:
        print(f"survey of {total} role(s) in {args.out}: {total - len(pending)} done, {len(pending)} to do "
              f"({'screening' if args.screen else 'full: ' + ','.join(config.methods)})", file=sys.stderr)
    if not args.worker:
        survey.run.set_status("running", pid=os.getpid())
    started = time.time()
    try:
        if args.workers > 1 and len(pending) > 1:
            failed = run_workers(survey, _child_argv(args), min(args.workers, len(pending)), show_progress=not args.no_progress)
            if failed:
                print(f"warning: {failed} worker(s) exited with an error; rerun the same command to retry their roles", file=sys.stderr)
        else:
            run_pending(survey, show_progress=not args.no_progress)
    except KeyboardInterrupt:
        if not args.worker:
            survey.run.set_status("cancelled", reason="interrupted")
        raise
    if args.worker:
        return 0
    left = survey.pending()
    code = _finish(survey, write_aggregate)
    seconds = time.time() - started
    if left:
        failed = [r for r in left if (survey.result(r) or {}).get("status") == "failed"]
        survey.run.set_status("failed", left=left, seconds=seconds)
        print(f"{len(left)} role(s) not finished ({len(failed)} with failed steps, see roles/*.json); rerun to retry them", file=sys.stderr)
        return 1
    survey.run.set_status("completed", seconds=seconds)
    return code


def _rebuild_argv(args, roles: str | None = None) -> list[str]:
    """The survey's arguments, from the parsed ones (``roles`` replaces --roles): every option of
    SURVEY_OPTIONS that has a value, so a new option reaches the workers without an edit here."""
    out = ["--roles", roles if roles is not None else args.roles, "--out", args.out]
    out += config_argv(args, SURVEY_OPTIONS)
    return out + (["--screen"] if args.screen else [])


def _finish(survey, write_aggregate) -> int:
    table, corr = write_aggregate(survey)
    if len(table):
        cols = [c for c in ("role", "method", "malevolence", "aggression", "deceptiveness", "benevolence", "flagged_fraction",
                            "confident_flagged_fraction", "uncertain_fraction", "validation_spearman",
                            "safety_before", "safety_after", "degradation", "rouge_l", "seconds") if c in table.columns]
        print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if len(corr):
        show = corr[["trait", "target", "method", "n", "pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high", "spearman_r", "spearman_p"]]
        print()
        print(show.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"-> {survey.path / 'table.csv'}, {survey.path / 'correlations.csv'}")
    return 0


def slurm_job_main(argv: list[str]) -> int:
    """Entry point of one cluster job: the survey CLI for a single role, in a fresh
    ``python -m sarft_core`` (this module is one of the CLI's commands, so it does not import it)."""
    import subprocess
    import sys

    code = subprocess.call([sys.executable, "-m", "sarft_core", *argv])
    if code:
        raise RuntimeError(f"survey job exited with status {code}")
    return code
