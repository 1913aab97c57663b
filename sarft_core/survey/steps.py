"""The steps of one role: RDS scoring, training and evaluation (subprocesses of the CLI), and running them in order."""
from __future__ import annotations


import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from sarft_core.errors import SarftError
from sarft_core.flags import flag_margin
from sarft_core.store import atomic_write_json, locked, read_json
from sarft_core.survey.config import FULL, Survey, SurveyConfig



# ---------------------------------------------------------------- what a step sees
class ModelHolder:
    """Loads the base model once per process, on first use (float32: the engine picks its fast path)."""

    def __init__(self, spec: str, device: str = "auto"):
        self.spec, self.device, self._lm = spec, device, None

    def get(self):
        if self._lm is None:
            from sarft_core.models import load_model

            self._lm = load_model(self.spec or None, dtype="float32", device=self.device)
        return self._lm


@dataclass
class RoleContext:
    survey: Survey
    role: str
    profile: object  # RoleProfile
    samples: list  # list[Sample]
    work_dir: Path
    model: ModelHolder
    show_progress: bool = True

    @property
    def config(self) -> SurveyConfig:
        return self.survey.config

    @property
    def samples_file(self) -> Path:
        return self.work_dir / "samples.jsonl"


# ---------------------------------------------------------------- default steps
def score_step(ctx: RoleContext) -> dict:
    """RDS scores of the role's samples (the fast mode unless the survey says exact)."""
    from sarft_core.scoring import ScoreOptions, score_role
    from sarft_core.store import write_table

    cfg = ctx.config
    # the flag and its margin need only the role and unsafe passes (the reference cancels out)
    options = ScoreOptions(passes=("role", "unsafe"), fast=not cfg.exact, max_batch_tokens=cfg.batch_tokens, wordings=cfg.wordings)
    bar = None
    if ctx.show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ctx.samples), desc=f"  RDS {ctx.role}", unit="sample", file=sys.stderr, leave=False)

    def progress(done, total):
        if bar is not None:
            bar.n = round(done, 1)
            bar.refresh()

    try:
        result = score_role(ctx.model.get(), ctx.samples, ctx.profile, options, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    frame = result.frame()
    validation = None
    if cfg.validation:
        from sarft_core.scoring.validate import validate_flags

        validation = validate_flags(ctx.model.get(), ctx.samples, result.rows)
        frame["influence"] = [validation["influence"][sid] for sid in frame["id"]]
    scores_path = ctx.work_dir / "scores.parquet"
    write_table(frame, scores_path)
    if validation is not None:
        from sarft_core import audit

        audit.write_validation(scores_path, validation["summary"])  # after its table: it is stamped with it
    margin = flag_margin(frame)
    st = result.stats
    out = {
        "samples": int(st["samples"]), "flagged": int(st["flagged"]), "flagged_fraction": float(st["flagged_fraction"]),
        "mean_margin": float(margin.mean()), "seconds": float(st["seconds"]), "from_cache": int(st["from_cache"]),
        "rechecked": int(st["rechecked"]), "verdicts": {k: int(v) for k, v in st["verdicts"].items()},
    }
    if validation is not None:
        out["validation"] = validation_result(validation["summary"])
    return out


def validation_result(summary: dict) -> dict:
    """The part of a role's validation its survey row shows (the whole is beside its scores)."""
    low, high = summary["spearman_ci"]
    return {"spearman": summary["spearman"], "spearman_ci_low": low, "spearman_ci_high": high,
            "precision_at_k": summary["precision_at_k"], "top_k": summary["top_k"], "reading": summary["reading"],
            "prompts": summary["settings"]["prompts"]}


class StepFailed(Exception):
    """A step of one role failed; the survey records the message and goes on with other work."""


def run_cli(args: list[str], log_path: Path, timeout: float | None = None) -> None:
    """Run `python -m sarft_core ARGS` in a subprocess, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "sarft_core", *args]
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise StepFailed(f"`{args[0]}` exited with status {proc.returncode}: {' | '.join(tail)} (full log: {log_path})")


def _model_args(cfg: SurveyConfig) -> list[str]:
    return ["--model", cfg.model] if cfg.model else []


def _set_aside_if_stale(out: Path, ctx: RoleContext) -> None:
    """A training run of this role made from other content (the samples or profiles were edited
    since) is neither reused nor resumed: it is renamed ``train-<m>.stale-<time>`` (kept, not
    deleted) and the role trains afresh. A run that recorded no digests cannot show it is current."""
    from sarft_core.data import DEMO_PROFILES
    from sarft_core.store import changed_inputs, inputs_fingerprint, read_json_object

    if not (out / "config.json").is_file():
        return
    recorded = (read_json_object(out / "config.json", None) or {}).get("inputs")
    current = inputs_fingerprint({"data": ctx.samples_file, "profiles": ctx.config.profiles or DEMO_PROFILES})
    if isinstance(recorded, dict) and not changed_inputs({k: recorded.get(k) for k in current}, current):
        return
    out.rename(out.with_name(f"{out.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}"))


def train_step(ctx: RoleContext, method: str) -> dict:
    """Fine-tune on the role's samples with ``method`` through `python -m sarft_core train`."""
    cfg = ctx.config
    out = ctx.work_dir / f"train-{method}"
    _set_aside_if_stale(out, ctx)
    status = read_json(out / "status.json") or {}
    if status.get("state") == "completed":
        return {"run": str(out), "reused": True, **{k: status.get(k) for k in ("step", "seconds")}}
    args = ["train", "--method", method, "--peft", cfg.peft, "--role", ctx.profile.name, "--data", str(ctx.samples_file), "--out", str(out), *_model_args(cfg)]
    if cfg.profiles:
        args += ["--profiles", cfg.profiles]
    if status:  # an earlier attempt left checkpoints: continue from them
        args = ["train", "--resume", "--out", str(out)]
    args += shlex.split(cfg.train_args)
    run_cli(args, ctx.work_dir / f"train-{method}.log")
    return {"run": str(out), "reused": False, **{k: (read_json(out / "status.json") or {}).get(k) for k in ("step", "seconds")}}


def find_metrics(directory: Path) -> dict:
    """The evaluation numbers under ``directory``, keyed by their survey column.

    Read through :func:`sarft_core.evaluation.results.load_metrics`; which metrics a survey records
    and under which column comes from the metric registry (:mod:`sarft_core.evaluation.metric_registry`):
    the refusal rate (``refusal_rate``: the mean over the harmful-prompt suites, jailbreaks excluded),
    the refusal margin (``refusal_margin``), ROUGE-L (``rouge_l``, the mean over RoleBench groups) and
    any metric a suite declares; a metric nobody declared keeps its own name (shown, not dropped).
    Each is the mean over its suites and groups; a number the evaluation did not measure is left out.
    """
    from sarft_core.evaluation.metric_registry import registered, survey_columns
    from sarft_core.evaluation.results import load_metrics

    if not directory.exists():
        return {}
    df = load_metrics(directory)
    if df.empty:
        return {}
    if df["judge"].notna().any() and (df["judge"] == "keyword").any():
        df = df[(df["judge"] == "keyword") | df["judge"].isna() | (df["judge"] == "")]
    df = df[(df["metric"] != "refusal_rate") | (df["suite"] != "jailbreak")]  # refusal under attack is its own question
    columns, declared = survey_columns(), registered()
    found: dict[str, float] = {}
    for metric, rows in df.groupby("metric", sort=False):
        column = columns.get(metric, None if metric in declared else str(metric))  # declared without a column: not surveyed
        values = rows["value"].dropna()
        if column and len(values):
            found[column] = float(values.mean())
    order = list(columns.values())  # the registry's order, then the undeclared ones
    return dict(sorted(found.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def metric_columns(*evaluations: dict) -> list[str]:
    """The survey table's evaluation columns: every survey column of the metric registry (refusal
    rate, margin, ROUGE-L, ...), then every other number the evaluations recorded."""
    from sarft_core.evaluation.metric_registry import survey_columns

    seen = dict.fromkeys(survey_columns().values())
    for ev in evaluations:
        seen.update(dict.fromkeys(k for k, v in ev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)))
    return list(seen)


def eval_step(ctx: RoleContext, train: dict) -> dict:
    """Evaluate a trained run through `python -m sarft_core eval --run DIR`."""
    run_dir = Path(train["run"])
    # the run directory names its base model: no --model beside --run
    eval_args = shlex.split(ctx.config.eval_args)
    role_args = ["--role", ctx.profile.name] if "rolebench" in ctx.config.eval_args and "--role" not in eval_args else []
    run_cli(["eval", "--run", str(run_dir), *role_args, *eval_args], run_dir.parent / (run_dir.name + "-eval.log"))
    metrics = find_metrics(run_dir)
    if not metrics:
        raise StepFailed(f"`eval` finished but wrote no refusal rate, margin or ROUGE-L under {run_dir}")
    return metrics


def base_eval_step(survey: Survey) -> dict:
    """Evaluate the base model once per survey (other processes wait on the lock and reuse it)."""
    base = survey.path / "base"
    done = read_json(base / "eval.json")
    if done:
        return done
    base.mkdir(parents=True, exist_ok=True)
    with locked(base / ".lock"):
        done = read_json(base / "eval.json")
        if done:
            return done
        out = base / "run"
        run_cli(["eval", *(_model_args(survey.config) or []), "--out", str(out), *shlex.split(survey.config.eval_args)], base / "eval.log")
        metrics = find_metrics(out)
        if not metrics:
            raise StepFailed(f"`eval` of the base model wrote no refusal rate, margin or ROUGE-L under {out}")
        atomic_write_json(base / "eval.json", metrics)
        return metrics


@dataclass
class Steps:
    """The pluggable parts of a survey. Each is a plain function; replace any of them."""

    score: Callable[[RoleContext], dict] = score_step
    train: Callable[[RoleContext, str], dict] = train_step
    evaluate: Callable[[RoleContext, dict], dict] = eval_step
    evaluate_base: Callable[[Survey], dict] = base_eval_step


# ---------------------------------------------------------------- one role
def run_role(ctx: RoleContext, steps: Steps) -> dict:
    """Run every step of one role; a failing step is recorded and the others still run."""
    started = time.time()
    result: dict = {"role": ctx.role, "mode": ctx.config.mode, "started": started, "errors": []}
    from sarft_core.store import write_table
    import pandas as pd

    write_table(pd.DataFrame([s.to_dict() for s in ctx.samples]), ctx.samples_file)
    try:
        result["score"] = steps.score(ctx)
    except (StepFailed, SarftError) as exc:
        result["errors"].append(f"score: {exc}")
    if ctx.config.mode == FULL:
        try:
            result["base"] = steps.evaluate_base(ctx.survey)
        except (StepFailed, SarftError) as exc:
            result["errors"].append(f"base eval: {exc}")
        result["methods"] = {}
        for method in ctx.config.methods:
            entry: dict = {}
            result["methods"][method] = entry
            t = time.time()
            try:
                entry["train"] = steps.train(ctx, method)
            except (StepFailed, SarftError) as exc:
                result["errors"].append(f"train {method}: {exc}")
                continue
            entry["train_seconds"] = time.time() - t
            t = time.time()
            try:
                entry["eval"] = steps.evaluate(ctx, entry["train"])
            except (StepFailed, SarftError) as exc:
                result["errors"].append(f"eval {method}: {exc}")
            entry["eval_seconds"] = time.time() - t
    result["finished"] = time.time()
    result["seconds"] = result["finished"] - started
    result["status"] = "failed" if result["errors"] else "ok"
    return result
