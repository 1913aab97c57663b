"""`eval`: safety, jailbreak and role-play evaluation of a model or a trained run."""
from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from sarft_core.cli._args import add_model_args
from sarft_core.cli._config_args import Option, add_config_options, config_from_args
from sarft_core.cli._judge_args import add_judge_args, build_judges, tqdm_progress
from sarft_core.errors import SarftError
from sarft_core.data.profiles import with_safety_instruction


# the generation options: defaults, types and allowed values come from GenerationConfig
GENERATION_OPTIONS = {
    "decoding": Option("greedy, or ROSE contrastive decoding"),
    "rose_alpha": Option("ROSE: weight of the unsafe-prompt logits"),
    "system_prompt": Option("system prompt for generation (default: empty, as published); 'safety': the system prompt the "
                            "--run trained under (the role profile for --method ptst) followed by a safety instruction (PTST's test template)"),
    "max_new_tokens": Option(),
    "batch_size": Option("prompts decoded together"),
    "backend": Option("generation: torch (model.generate) or vllm (where vLLM is installed; greedy only)"),
    "tensor_parallel": Option("--backend vllm: GPUs per model"),
}


def register(subparsers) -> None:
    from sarft_core.evaluation.generation import GenerationConfig

    p = subparsers.add_parser("eval", help="evaluate refusal, over-refusal, jailbreaks, refusal margin and role-play ROUGE-L", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", default=None, help="a completed training run directory to evaluate (instead of --model)")
    add_model_args(p)
    p.add_argument("--suite", default="probes", help="comma-separated registered suites (advbench, advbench-heldout, xstest, jailbreak, rolebench, margin, probes, ...), or a .csv/.jsonl prompt file")
    add_judge_args(p)
    p.add_argument("--limit", type=int, default=None, help="first N prompts of each suite (XSTest / probes: N per label; jailbreak: N base prompts)")
    p.add_argument("--role", default=None, help="rolebench: the RoleBench character")
    p.add_argument("--role-system", default=None, help="rolebench: system prompt for role-play answers (default: none, as in training)")
    p.add_argument("--data-dir", default=None, help="folder with the reference data (default: $SARFT_DATA_DIR or ../shared/data)")
    p.add_argument("--advbench", default=None, help="AdvBench CSV (goal, target)")
    p.add_argument("--xstest", default=None, help="XSTest prompts CSV (prompt, label)")
    p.add_argument("--rolebench-spe", default=None, help="RoleBench role-specific test JSONL")
    p.add_argument("--rolebench-raw", default=None, help="RoleBench general-instruction test JSONL")
    p.add_argument("--probes", default=None, help="probe JSONL (default: data/probes.jsonl)")
    p.add_argument("--prompt-col", default=None, help="prompt column of a custom prompt file")
    p.add_argument("--attacks", default=None, help="jailbreak: comma-separated subset of aim, caesar, code, ica, suppress")
    add_config_options(p, GenerationConfig, GENERATION_OPTIONS)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy shared CPU)")
    p.add_argument("--out", default=None, help="evaluation directory (default: RUN/eval/<setting> for --run, else a workspace run named after the model and setting)")
    p.set_defaults(func=run)


# the --system-prompt value that asks for PTST's test-time safety prompt (data.profiles.SAFETY_INSTRUCTION)
SAFETY = "safety"


def system_prompt_for(value: str | None, trained_under: str) -> str | None:
    """``--system-prompt``: text as given, or ``safety``: the training prompt followed by the safety
    instruction (train without a safety prompt, test with one). The resolved text is what the
    evaluation key records, so each choice has its own results."""
    if value is None or value.strip().lower() != SAFETY:
        return value
    return with_safety_instruction(trained_under)


def trained_system_prompt(run_dir: Path) -> str:
    """The system turn a training run's samples were trained under ('' unless its method sets one,
    as ptst sets the role profile)."""
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles
    from sarft_core.runconfig import RunConfig
    from sarft_core.training.methods import get_method

    config = RunConfig.read(run_dir)
    train = config.train if config is not None else None
    if train is None:
        return ""
    method = get_method(train.method)
    if method.system is None:
        return ""
    return method.system_prompt(get_profile(load_profiles(train.profiles or DEMO_PROFILES), train.role))


def eval_dir(args, key: dict) -> Path:
    """Where results go: deterministic, so rerunning the same command resumes; named after the
    whole evaluation key (weights, precision, generation settings), so two settings never share one."""
    from sarft_core.evaluation.runner import key_digest

    if args.out:
        return Path(args.out).expanduser()
    decoding = key["generation"].get("decoding", "greedy")
    if args.run:  # a completed run's weights never change: the run's own folder holds its evaluations
        setting = key_digest({k: v for k, v in key.items() if k != "model_fingerprint"})
        return Path(args.run).expanduser() / "eval" / f"{decoding}-{setting}"
    from sarft_core.models import resolve_model_dir
    from sarft_core.store import runs_root, slug

    spec = resolve_model_dir(args.model)[0]
    return runs_root() / f"eval-{slug(spec, limit=-40, default='model')}-{decoding}-{key_digest(key)}"


def run(args) -> int:
    from sarft_core.evaluation.generation import GenerationConfig
    from sarft_core.evaluation.runner import Evaluator, evaluation_key, precision_of
    from sarft_core.evaluation.suites import SuiteContext, get_suite
    from sarft_core.models import check_device, load_model, model_identity
    from sarft_core.runconfig import RunConfig
    from sarft_core.store import OwnerLock, RunDir, claim_output_dir, create_run

    from sarft_core.validation import Range, check_number

    check_number(args.threads, Range(lo=1, hi=4096, integer=True, optional=True, option="--threads",
                                     hint="give a positive number of CPU threads, or leave it out"))
    check_number(args.limit, Range(lo=1, integer=True, optional=True, option="--limit", hint="give a positive number, or leave it out"))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.run and args.model == os.environ.get("SARFT_MODEL", ""):
        args.model = ""  # $SARFT_MODEL is the default of --model, not a choice: it never competes with --run
    if args.run and args.model:
        raise SarftError("both --run and --model given", "evaluate either a training run (--run) or a model (--model)")
    if args.run:
        check_training_run(Path(args.run))
    args.system_prompt = system_prompt_for(args.system_prompt, trained_system_prompt(Path(args.run)) if args.run else "")
    generation = config_from_args(GenerationConfig, args)
    ctx = SuiteContext(
        data_dir=args.data_dir, limit=args.limit, role=args.role, role_system=args.role_system,
        prompt_col=args.prompt_col, attacks=[a.strip() for a in args.attacks.split(",")] if args.attacks else None,
        paths={k: v for k, v in {"advbench": args.advbench, "xstest": args.xstest, "rolebench_spe": args.rolebench_spe,
                                  "rolebench_raw": args.rolebench_raw, "probes": args.probes}.items() if v},
    )
    suites = [get_suite(name.strip(), ctx) for name in args.suite.split(",") if name.strip()]
    if not suites:
        raise SarftError("no suite given", "pass --suite probes (or advbench, xstest, jailbreak, rolebench, margin)")
    judges = build_judges(args) if any(s.scorer == "judge" for s in suites) else []
    if args.decoding == "rose" and any(s.solver == "margin" for s in suites):
        print("note: the refusal margin measures the model itself; it is computed without ROSE", file=sys.stderr)
    model_spec = args.run or args.model or ""
    check_device(args.device)
    # the resolved spec (embedded-aligned for the default) and the weights' identity, without loading them
    model_label, fingerprint = model_identity(model_spec or None)
    key = evaluation_key(fingerprint, generation.identity(), precision_of(args.dtype, args.device))
    out = eval_dir(args, key)
    claim_output_dir(out, "eval", "evaluation")  # before any work: a folder of another kind is never written
    with OwnerLock(out, "evaluation"):  # one writer per evaluation directory
        check_same_setting(out, model_label, fingerprint, generation.identity(), key["precision"], given_out=bool(args.out))
        config = RunConfig.for_evaluation(model_label, fingerprint, args.run, generation.identity(),
                                          [s.name for s in suites], [j.describe() for j in judges], precision=key["precision"])
        evaluator = Evaluator(
            RunDir(out),
            lambda: load_model(model_spec or None, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code),
            generation, judges, progress=functools.partial(tqdm_progress, run_path=out), log=lambda m: print(m, file=sys.stderr),
            model_fingerprint=fingerprint, precision=key["precision"],
        )
        evaluator.check_state(suites)  # a damaged table or metrics.json is named before any work
        evaluator.run = create_run("eval", config.to_dict(), path=out)
        return _evaluate(evaluator.run, evaluator, suites, ctx)


def check_training_run(path: Path) -> None:
    """``--run`` must be a completed training run directory (not an evaluation folder, not a model)."""
    from sarft_core.runconfig import RunConfig
    from sarft_core.store import RunDir

    if not (path / "config.json").is_file():
        raise SarftError(f"not a run directory: {path}", "give the directory of a completed training run")
    config = RunConfig.read(path)
    if config is None:
        raise SarftError(f"{path / 'config.json'} is damaged (not a JSON object)", "give the directory of a completed training run")
    kind = config.kind
    if kind != "train":
        raise SarftError(
            f"{path} is a {kind or 'unknown'} run, not a training run",
            "give --run the directory of a completed training run (the one holding artifacts/adapter or artifacts/model)"
            + ("; an evaluation folder's results are read with `report`" if kind == "eval" else ""),
        )
    # before anything is created: an evaluation folder stamped with half-trained weights would
    # refuse the same command for good once the run completes
    state = RunDir(path).status().get("state")
    if state != "completed":
        raise SarftError(f"training run {path} is not complete (state: {state}), so it has no final weights to evaluate",
                         "wait for it to finish (or resume it with `python -m sarft_core train --resume --out ...`), then rerun this command")


def check_same_setting(out: Path, model: str, fingerprint: str, generation: dict, precision: str | None = None,
                       given_out: bool = True) -> None:
    """An evaluation directory holds the answers of ONE evaluation key (weights, precision,
    generation setting): resuming it with the same one is free, anything else is refused (it
    would mix two settings' results). A folder made before the precision was recorded is resumed;
    its answers' keys lack the precision, so they are computed afresh, never reused."""
    from sarft_core.evaluation.runner import evaluation_key
    from sarft_core.runconfig import RunConfig

    if not (out / "config.json").exists():
        return
    key = evaluation_key(fingerprint, generation, precision or "")
    old = RunConfig.read(out)
    if old is None:
        raise SarftError(f"{out / 'config.json'} is damaged (not a JSON object)",
                         "choose another --out (the folder's finished answers stay there, untouched)")
    if old.eval is None:
        raise SarftError(f"{out} holds a {old.kind or 'unknown'} run, not an evaluation", "choose another --out for the evaluation")
    changed = []
    recorded = old.eval.model_fingerprint
    same_model = recorded == key["model_fingerprint"] if recorded is not None else (old.model or "embedded") == model
    if not same_model:
        changed.append(f"model: {old.model!r} -> {model!r}" if old.model != model else f"model {model!r}: its weights changed")
    if precision is not None and old.eval.precision is not None and old.eval.precision != precision:
        changed.append(f"precision: {old.eval.precision!r} -> {key['precision']!r}")
    before, generation = old.eval.generation, key["generation"]
    for name in sorted(set(before) | set(generation)):
        if before.get(name) != generation.get(name):
            changed.append(f"{name}: {before.get(name)!r} -> {generation.get(name)!r}")
    if changed:
        fix = ("use another --out (or leave --out out: each model, precision and setting gets its own folder), "
               "or repeat the original settings to resume") if given_out else (
               f"move {out} aside (it holds answers of other weights or settings), then rerun this command, or give --out")
        raise SarftError(f"{out} holds an evaluation made with other settings ({'; '.join(changed)[:600]})", fix)


def _trained_on_warning(suite: str, ids: list[str]) -> list[str]:
    if not ids:
        return []
    return [f"warning: {suite}: {len(ids)} prompt(s) are AdvBench rows this model's alignment trained on (recorded in metrics.json, "
            f"trained_on); for unseen prompts use --suite {'jailbreak-heldout' if suite == 'jailbreak' else 'advbench-heldout'}"]


def _evaluate(run_dir, evaluator, suites, ctx) -> int:
    from sarft_core.evaluation.runner import summary_table

    run_dir.set_status("running")
    records, warnings = [], []
    try:
        for suite in suites:
            run_dir.log(event="suite_start", suite=suite.name)
            records += evaluator.run_suite(suite, ctx)
            run_dir.log(event="suite_done", suite=suite.name)
            warnings += _trained_on_warning(suite.name, evaluator.trained_on.get(suite.name, []))
    except SarftError as err:
        run_dir.set_status("failed", error=str(err))
        raise
    except KeyboardInterrupt:
        run_dir.set_status("cancelled")
        raise
    except Exception as err:
        run_dir.set_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    run_dir.set_status("completed")
    print(summary_table(records))
    for line in warnings:
        print(line)
    print(f"results: {run_dir.path} (metrics.json, artifacts/<suite>.parquet)")
    return 0
