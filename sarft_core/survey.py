"""The multi-role risk survey: which characters lose the most safety when fine-tuned on?

Per role, a survey runs a list of *steps* and writes one result file when the role is finished:

- screening (no training): RDS scoring of the role's samples -> flagged fraction;
- full: scoring, then for each method (sft, sarft, ...) training and evaluation of the trained
  model, plus one evaluation of the base model for the whole survey.

Then it joins the per-role results with the roles' traits into one table and correlates the risk
measures (flagged fraction; safety degradation per method) with each trait.

Layout of a survey directory (a run directory of ``sarft_core.store``)::

    config.json  status.json  logs.jsonl
    traits.csv                 the traits of the surveyed roles
    roles/<slug>.json          one finished role (written atomically, last): the resume marker
    roles/<slug>.lock          held (flock) by the process working on that role
    roles/<slug>/              the role's work: samples.jsonl, scores.parquet, train-<m>/, eval-<m>/
    base/eval.json             the base model's evaluation (full mode)
    table.csv                  one row per role (screening) or per role and method (full)
    correlations.csv           each trait against each risk measure

Resuming: roles with a result file are skipped, so a crash loses at most the role in progress,
and inside a role the training runs resume from their own checkpoints. Several processes (local
workers, SLURM jobs) can work on one survey at once: each role is claimed with a file lock.

Steps are plain callables (:class:`Steps`), so training and evaluation can be swapped for other
implementations; the defaults call ``python -m sarft_core train`` / ``eval`` in subprocesses.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sarft_core.errors import SarftError
from sarft_core.flags import flag_margin
from sarft_core.validation import number, validate_numbers
from sarft_core.store import (Progress, RunDir, atomic_write_json, create_run, ensure_dir, file_lock, locked, read_json, read_json_object,
                              slug)

SCREEN, FULL = "screen", "full"
# config fields that must not change when a survey is resumed (they change the results)
_RESULT_FIELDS = ("mode", "methods", "peft", "model", "data", "profiles", "limit", "answer_index", "exact", "train_args", "eval_args")


@dataclass
class SurveyConfig:
    roles: list[str]
    mode: str = SCREEN
    methods: list[str] = field(default_factory=lambda: ["sft", "sarft"])
    peft: str = "lora"
    model: str = ""  # "" = the embedded default model
    data: list[str] = field(default_factory=list)  # sample files; empty = the demo samples
    profiles: str = ""  # "" = the demo profiles
    limit: int | None = number(None, lo=1, integer=True, optional=True, option="--limit")
    answer_index: int = number(0, lo=0, integer=True, option="--answer-index")
    exact: bool = False  # score in IEEE fp32 instead of the fast mode
    device: str = "auto"
    batch_tokens: int | None = None  # None: the scorer's default for the device
    trait_source: str = "default"
    trait_csv: str = ""
    train_args: str = ""  # extra arguments for `train`, e.g. "--max-steps 20"
    eval_args: str = "--suite margin --judge keyword"  # generation-free; add rolebench,probes for more

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        validate_numbers(self)
        from sarft_core.models import check_device

        check_device(self.device)


def legacy_role_slug(name: str) -> str:
    """The folder name of surveys made before slugs carried a hash (two names could share it)."""
    return slug(name, sep="_", limit=None, default="role")


def role_slug(name: str) -> str:
    """A collision-free folder name: the readable slug plus a short hash of the exact name, so
    names that differ only in characters the slug drops (an emoji, punctuation) never share one."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{legacy_role_slug(name)[:80]}-{digest}"


# ---------------------------------------------------------------- the survey directory
@dataclass
class Survey:
    run: RunDir
    config: SurveyConfig

    @property
    def path(self) -> Path:
        return self.run.path

    def slug(self, role: str) -> str:
        """The role's folder name; a survey made before hashed slugs keeps its old one for a role
        whose finished result names exactly this role (so old surveys stay readable)."""
        legacy = legacy_role_slug(role)
        old = read_json_object(self.path / "roles" / f"{legacy}.json", None)
        if old is not None and old.get("role") == role and not (self.path / "roles" / f"{role_slug(role)}.json").exists():
            return legacy
        return role_slug(role)

    def role_dir(self, role: str) -> Path:
        return ensure_dir(self.path / "roles" / self.slug(role))

    def result_path(self, role: str) -> Path:
        return self.path / "roles" / f"{self.slug(role)}.json"

    def lock_path(self, role: str) -> Path:
        return self.path / "roles" / f"{role_slug(role)}.lock"

    def result(self, role: str) -> dict | None:
        """The role's finished result; a damaged file (or one of another role) reads as not done."""
        data = read_json_object(self.result_path(role), None)
        if data is None or data.get("role") != role:
            return None
        return data

    def is_done(self, role: str) -> bool:
        r = self.result(role)
        return bool(r) and r.get("status") == "ok"

    def pending(self) -> list[str]:
        return [r for r in self.config.roles if not self.is_done(r)]


def open_survey(path: str | Path, config: SurveyConfig) -> Survey:
    """Create a survey directory, or reopen one to resume (its result-defining settings must match)."""
    config.validate()
    path = Path(path)
    old = read_json_object(path / "config.json", {})
    if old is not None and old.get("kind") == "survey" and not (isinstance(old.get("roles", []), list) and all(isinstance(r, str) for r in old.get("roles", []))):
        old = None
    if old is None:
        raise SarftError(f"{path / 'config.json'} is damaged (not a JSON object)",
                         "choose another --out (finished roles under roles/ stay readable there), or restore the file")
    if old and old.get("kind") == "survey":
        changed = [k for k in _RESULT_FIELDS if k in old and old[k] != getattr(config, k)]
        if changed:
            raise SarftError(
                f"{path} holds a survey made with other settings ({', '.join(f'{k}: {old[k]!r} -> {getattr(config, k)!r}' for k in changed)})",
                "use another --out for the new settings, or repeat the original ones to resume",
            )
        # a resumed survey may add roles; keep the union, in order
        roles = list(dict.fromkeys(list(old.get("roles", [])) + list(config.roles)))
        config = SurveyConfig(**dict(config.to_dict(), roles=roles))
    elif old:
        raise SarftError(f"{path} is a {old.get('kind', 'unknown')} run, not a survey", "choose an empty or new --out directory")
    run = create_run("survey", config.to_dict(), path=path)
    return Survey(run, config)


class RoleLock:
    """An exclusive, non-blocking claim on one role; released by the OS if the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = None

    def acquire(self) -> bool:
        self._lock = file_lock(self.path, wait=False)
        return self._lock is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


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


def load_role_samples(paths: list[str], role: str, limit: int | None, answer_index: int = 0) -> list:
    """The role's samples from one or several files (e.g. RoleBench test + RoleGPT), ids kept unique."""
    from sarft_core.data import DEMO_SAMPLES, Sample, load_samples

    paths = paths or [str(DEMO_SAMPLES)]
    out: list = []
    for k, path in enumerate(paths):
        left = None if limit is None else limit - len(out)
        if left is not None and left <= 0:
            break
        part = load_samples(path, role=role, answer_index=answer_index, limit=left)
        if len(paths) > 1:
            part = [Sample(id=f"{Path(path).stem}:{s.id}", role=s.role, input=s.input, output=s.output) for s in part]
        out.extend(part)
    return out


# ---------------------------------------------------------------- default steps
def score_step(ctx: RoleContext) -> dict:
    """RDS scores of the role's samples (the fast mode unless the survey says exact)."""
    from sarft_core.scoring import ScoreOptions, score_role
    from sarft_core.store import write_table

    cfg = ctx.config
    # the flag and its margin need only the role and unsafe passes (the reference cancels out)
    options = ScoreOptions(passes=("role", "unsafe"), fast=not cfg.exact, max_batch_tokens=cfg.batch_tokens)
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
    write_table(frame, ctx.work_dir / "scores.parquet")
    margin = flag_margin(frame)
    st = result.stats
    return {
        "samples": int(st["samples"]), "flagged": int(st["flagged"]), "flagged_fraction": float(st["flagged_fraction"]),
        "mean_margin": float(margin.mean()), "seconds": float(st["seconds"]), "from_cache": int(st["from_cache"]),
        "rechecked": int(st["rechecked"]),
    }


def command_available(name: str) -> bool:
    """Whether `python -m sarft_core NAME` exists in this installation."""
    return importlib.util.find_spec(f"sarft_core.cli.{name}") is not None


class StepFailed(Exception):
    """A step of one role failed; the survey records the message and goes on with other work."""


def run_cli(args: list[str], log_path: Path, timeout: float | None = None) -> None:
    """Run `python -m sarft_core ARGS` in a subprocess, its output appended to ``log_path``."""
    if not command_available(args[0]):
        raise StepFailed(
            f"the `{args[0]}` command is not available in this installation of sarft_core "
            f"(no sarft_core/cli/{args[0]}.py); install a version that has it, or plug another step into the survey"
        )
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


def train_step(ctx: RoleContext, method: str) -> dict:
    """Fine-tune on the role's samples with ``method`` through `python -m sarft_core train`."""
    cfg = ctx.config
    out = ctx.work_dir / f"train-{method}"
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


def role_line(result: dict, index: int | None = None, total: int | None = None) -> str:
    head = f"[{index}/{total}] " if index and total else ""
    s = _obj(result.get("score"))
    bits = []
    if s:
        bits.append(f"{s['samples']} samples, {100 * s['flagged_fraction']:.1f}% flagged")
    for m, e in _obj(result.get("methods")).items():
        ev = _obj(_obj(e).get("eval"))
        if ev:
            bits.append(f"{m}: " + ", ".join(f"{k} {v:.3g}" for k, v in ev.items()))
    if result.get("errors"):
        bits.append(f"{len(result['errors'])} step(s) failed: {result['errors'][0][:160]}")
    return f"{head}{result['role']}: " + "; ".join(bits) + f" ({result['seconds']:.1f} s)"


def run_pending(
    survey: Survey,
    steps: Steps | None = None,
    show_progress: bool = True,
    on_role_done: Callable[[dict], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[dict]:
    """Work through the survey's unfinished roles in this process; returns the results it wrote.

    Roles finished (by anyone) are skipped; roles claimed by another live process are skipped too.
    """
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles

    steps = steps or Steps()
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    cfg = survey.config
    profiles = load_profiles(cfg.profiles or DEMO_PROFILES)
    holder = ModelHolder(cfg.model, cfg.device)
    roles = cfg.roles
    report = Progress(survey.path, unit="role", phase="survey")
    report(len(roles) - len(survey.pending()), len(roles))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(roles), initial=len(roles) - len(survey.pending()), desc="survey", unit="role", file=sys.stderr)
    written = []
    try:
        for role in roles:
            if survey.is_done(role):
                continue
            lock = RoleLock(survey.lock_path(role))
            if not lock.acquire():
                continue  # another worker has it
            try:
                if survey.is_done(role):  # finished while we waited for the lock
                    continue
                try:
                    profile = get_profile(profiles, role)
                    samples = load_role_samples(cfg.data, profile.name, cfg.limit, cfg.answer_index)
                except SarftError as exc:  # e.g. no samples for this role: record it, go on with the others
                    now = time.time()
                    result = {"role": role, "mode": cfg.mode, "started": now, "finished": now, "seconds": 0.0,
                              "errors": [f"data: {exc}"], "status": "failed"}
                else:
                    ctx = RoleContext(survey, role, profile, samples, survey.role_dir(role), holder, show_progress)
                    result = run_role(ctx, steps)
                atomic_write_json(survey.result_path(role), result)
                survey.run.log(event="role", role=role, status=result["status"], seconds=result["seconds"], errors=result["errors"])
                written.append(result)
                done = len(roles) - len(survey.pending())
                line = role_line(result, done, len(roles))
                report(done, len(roles))
                if bar is not None:
                    bar.write(line, file=sys.stderr)
                    bar.n = done
                    bar.refresh()
                else:
                    echo(line)
                if on_role_done:
                    on_role_done(result)
            finally:
                lock.release()
    finally:
        if bar is not None:
            bar.close()
    return written


# ---------------------------------------------------------------- several processes
def run_workers(survey: Survey, worker_argv: list[str], workers: int, poll_s: float = 1.0, show_progress: bool = True) -> int:
    """Spread the pending roles over ``workers`` local subprocesses (each `python -m sarft_core
    survey ... --worker`), showing overall progress from the result files. Returns failed workers."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = [subprocess.Popen([sys.executable, "-m", "sarft_core", *worker_argv], env=env) for _ in range(workers)]
    total = len(survey.config.roles)
    report = Progress(survey.path, unit="role", phase=f"survey ({workers} workers)")
    report(total - len(survey.pending()), total)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=total - len(survey.pending()), desc=f"survey ({workers} workers)", unit="role", file=sys.stderr)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            report(total - len(survey.pending()), total)
            if bar is not None:
                bar.n = total - len(survey.pending())
                bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    finally:
        if bar is not None:
            bar.n = total - len(survey.pending())
            bar.close()
    return sum(1 for p in procs if p.returncode != 0)


def submit_slurm(survey: Survey, role_argv: Callable[[str], list[str]], options: dict) -> list[str]:
    """Submit one SLURM job per pending role through submitit (imported only here)."""
    import shutil

    cluster = options.pop("cluster", None)  # only tests name one (submitit's local / debug executors)
    if cluster is None and shutil.which("sbatch") is None:
        # submitit would silently fall back to local processes and report them as submitted jobs
        raise SarftError("--slurm asked for, but SLURM is not available on this machine (no sbatch command)",
                         "run on the cluster's login node, or drop --slurm (use --workers N for local processes)")
    try:
        import submitit
    except ImportError:
        raise SarftError("--slurm needs the submitit package", "pip install submitit (on the cluster's login node)") from None
    folder = survey.path / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    if cluster is None and executor.cluster != "slurm":
        raise SarftError(f"--slurm asked for, but submitit found no SLURM cluster (it would run the jobs {executor.cluster}ly)",
                         "run on the cluster's login node, or drop --slurm (use --workers N for local processes)")
    executor.update_parameters(**{k: v for k, v in options.items() if v is not None})
    jobs = []
    pending = survey.pending()
    with executor.batch():
        for role in pending:
            jobs.append(executor.submit(_job_main, role_argv(role)))
    ids = [j.job_id for j in jobs]
    survey.run.log(event="slurm", roles=pending, jobs=ids)
    return ids


def _job_main(argv: list[str]) -> int:
    """Entry point of one cluster job: the survey CLI for a single role."""
    from sarft_core.cli import main

    code = main(argv)
    if code:
        raise RuntimeError(f"survey job exited with status {code}")
    return code


# ---------------------------------------------------------------- aggregate
def survey_traits(survey: Survey) -> "object":
    """The surveyed roles' traits (computed once and kept in traits.csv)."""
    import pandas as pd

    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles
    from sarft_core.store import write_table
    from sarft_core.traits import rate_traits

    cfg = survey.config
    path = survey.path / "traits.csv"
    if path.exists():
        try:
            have = pd.read_csv(path)
        except (ValueError, OSError, UnicodeDecodeError):  # damaged: rate the traits again
            have = None
        if have is not None and "role" in have.columns and set(cfg.roles) <= set(have["role"].astype(str)):
            return have
    profiles = load_profiles(cfg.profiles or DEMO_PROFILES)
    chosen = {r: get_profile(profiles, r) for r in cfg.roles}
    table = rate_traits(chosen, source=cfg.trait_source, csv=cfg.trait_csv or None)
    write_table(table, path)
    return table


def _obj(value) -> dict:
    """``value`` if it is a dict, else {} (a hand-edited or damaged result never crashes a report)."""
    return value if isinstance(value, dict) else {}


def _safety(metrics: dict | None) -> tuple[float, str]:
    """The safety number of an evaluation: refusal rate if it has one, else the refusal margin."""
    metrics = metrics or {}
    for key in ("refusal_rate", "refusal_margin"):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v), key
    return math.nan, ""


def aggregate(survey: Survey, traits=None):
    """(table, correlations): one row per role (screening) or per role and method (full)."""
    import pandas as pd

    from sarft_core.stats import correlate
    from sarft_core.traits import TRAITS

    traits = survey_traits(survey) if traits is None else traits
    trait_cols = [t for t in TRAITS if t in traits.columns]
    by_role = traits.set_index("role")
    rows = []
    for role in survey.config.roles:
        res = survey.result(role)
        if not res:
            continue
        base = {"role": role, **{t: float(by_role.loc[role, t]) if role in by_role.index else math.nan for t in trait_cols}}
        sc = _obj(res.get("score"))
        base.update(samples=sc.get("samples"), flagged_fraction=sc.get("flagged_fraction", math.nan),
                    mean_margin=sc.get("mean_margin", math.nan), status=res.get("status"), seconds=res.get("seconds"))
        if survey.config.mode == SCREEN:
            rows.append(base)
            continue
        before, measure = _safety(_obj(res.get("base")))
        evals = {method: _obj(_obj(_obj(res.get("methods")).get(method)).get("eval")) for method in survey.config.methods}
        columns = metric_columns(*evals.values())
        for method, ev in evals.items():
            after, _ = _safety({measure: ev.get(measure)} if measure else ev)
            rows.append(dict(base, method=method, safety_measure=measure or None, safety_before=before, safety_after=after,
                             degradation=before - after, **{c: ev.get(c, math.nan) for c in columns}))
    table = pd.DataFrame(rows)
    corr_rows = []
    if len(table):
        targets = [("flagged_fraction", None)]
        if survey.config.mode == FULL:
            targets += [("degradation", m) for m in survey.config.methods]
        for target, method in targets:
            sub = table if method is None else table[table["method"] == method]
            if method is None and "method" in table:
                sub = sub.drop_duplicates("role")
            for trait in trait_cols:
                stats = correlate(sub[trait].astype(float).tolist(), sub[target].astype(float).tolist())
                corr_rows.append({"trait": trait, "target": target, "method": method or "", **stats})
    return table, pd.DataFrame(corr_rows)


def write_aggregate(survey: Survey) -> tuple:
    from sarft_core.store import write_table

    table, corr = aggregate(survey)
    write_table(table, survey.path / "table.csv")
    write_table(corr, survey.path / "correlations.csv")
    return table, corr
