"""Read runs for display: tables of runs, evaluation metrics and generations, comparisons.

Training writes ``config.json`` (read as a :class:`sarft_core.runconfig.RunConfig`), ``status.json``
and ``logs.jsonl``; evaluation results are read through :mod:`sarft_core.evaluation.results` (an
evaluation run, or a training run's ``eval/*`` folders). Everything here reads defensively: a missing file is an empty table,
a malformed one a :class:`SarftError` naming the file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from sarft_core.errors import SarftError
from sarft_core.runconfig import RunConfig
from sarft_core.store import RunDir

METRIC_COLUMNS = ["suite", "metric", "value", "ci_low", "ci_high", "n"]
GENERATION_COLUMNS = ["suite", "prompt", "response", "verdict"]


def run_label(run: RunDir) -> str:
    """``name (method, role, λ=...)``, or an evaluation's model: :meth:`sarft_core.runconfig.RunConfig.label`."""
    return RunConfig.of(run).label(run.name)


def run_labels(runs: list[RunDir]) -> dict[str, str]:
    """{run path: label} for runs shown together: a label two runs share (one model evaluated with
    two settings) gets its folder's name, so charts that group by label never merge two runs."""
    labels = {str(run.path): run_label(run) for run in runs}
    counts = pd.Series(list(labels.values())).value_counts()
    return {path: f"{label} · {Path(path).name}" if counts[label] > 1 else label for path, label in labels.items()}


# --- what the Evaluation page can evaluate: a finished training run (--run) or a model (--model)
MODEL_TARGET = "model:"


def model_target(spec: str) -> str:
    """The target for a model spec; blank is the default model, named (the command says what ran)."""
    from sarft_core.models import DEFAULT_MODEL

    return MODEL_TARGET + (spec.strip() or DEFAULT_MODEL)


def eval_target_args(target: str) -> list[str]:
    """The ``eval`` command's arguments that choose what ``target`` names."""
    if target.startswith(MODEL_TARGET):
        return ["--model", target[len(MODEL_TARGET):]]
    return ["--run", target]


def eval_target_label(target: str) -> str:
    if target.startswith(MODEL_TARGET):
        return f"model {target[len(MODEL_TARGET):]} (as it is, before any training)"
    return run_label(RunDir(Path(target)))


def runs_table(runs: list[RunDir]) -> pd.DataFrame:
    rows = []
    for run in runs:
        cfg, st = RunConfig.of(run), run.status()
        updated = st.get("updated")
        rows.append({
            "run": run.name, "kind": cfg.kind or "?", "state": st.get("state", "?"), "model": cfg.model, "role": cfg.role,
            "method": cfg.method, "lambda": cfg.lam,
            "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(updated)) if updated else "",
            "path": str(run.path),
        })
    return pd.DataFrame(rows, columns=["run", "kind", "state", "model", "role", "method", "lambda", "updated", "path"])


def has_eval(run: RunDir) -> bool:
    from sarft_core.evaluation.results import find_eval_runs

    return bool(find_eval_runs(run.path))


def read_metrics(run: RunDir) -> pd.DataFrame:
    """Every evaluation of ``run`` (its own, or those under ``eval/``) as one long table, with each
    metric's ``kind`` (:mod:`sarft_core.evaluation.metric_registry`)."""
    from sarft_core.evaluation.results import load_metrics

    try:
        df = load_metrics(run.path)
    except ValueError as exc:
        raise SarftError(f"evaluation results under {run.path} could not be read ({exc})", "rerun the evaluation of this run") from None
    if df.empty:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    from sarft_core.evaluation.metric_registry import metric_kind

    df = df.rename(columns={"run": "eval_dir"})
    for col in ("value", "ci_low", "ci_high", "n"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["kind"] = df["metric"].map(metric_kind)  # from the metric registry: undeclared names are "other"
    return df[METRIC_COLUMNS + [c for c in df.columns if c not in METRIC_COLUMNS]]


def read_generations(run: RunDir) -> pd.DataFrame:
    """All suites' generations of ``run``; ``verdict`` is the first judge's in registry order (the default first)."""
    from sarft_core.evaluation.results import find_eval_runs

    frames = []
    for eval_run in find_eval_runs(run.path):
        for path in sorted((eval_run / "artifacts").glob("*.parquet")):
            try:
                df = pd.read_parquet(path)
            except (OSError, ValueError) as exc:
                raise SarftError(f"{path} could not be read ({exc})", "rerun the evaluation of this run") from None
            verdicts = [c for c in df.columns if c.startswith("verdict_") and not c.endswith("_missing")]
            if "response" not in df.columns or not verdicts:
                continue
            from sarft_core.evaluation.judges import judge_names

            chosen = next((f"verdict_{n}" for n in judge_names() if f"verdict_{n}" in verdicts), verdicts[0])  # registry order
            df = df.assign(suite=path.stem, verdict=df[chosen])
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=GENERATION_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    return out[GENERATION_COLUMNS + [c for c in out.columns if c not in GENERATION_COLUMNS]]


def kind_tables(long: pd.DataFrame) -> list[tuple]:
    """(kind, rows) for each metric kind present in ``long`` (a ``kind`` column, as
    :func:`read_metrics` writes), in chart order; metrics nobody declared come last, as ``other``."""
    from sarft_core.evaluation.metric_registry import kinds_in_order

    if long.empty:
        return []
    return [(kind, long[long["kind"] == kind.name]) for kind in kinds_in_order(long["kind"])]


def suite_axis(df: pd.DataFrame) -> pd.DataFrame:
    """x labels for metric bars: the suite, plus the metric when a run has several per suite."""
    df = df.copy()
    several = df.groupby(["run", "suite"])["metric"].transform("nunique") > 1
    df["suite"] = [f"{s} · {m}" if many else str(s) for s, m, many in zip(df["suite"], df["metric"], several)]
    return df


def kind_mean(metrics: pd.DataFrame, kind: str) -> float:
    """The mean value of the metrics of one kind (NaN when there is none)."""
    values = metrics[metrics["kind"] == kind]["value"].dropna() if not metrics.empty else []
    return float(values.mean()) if len(values) else math.nan


def compare_metrics(runs: list[RunDir]) -> pd.DataFrame:
    """All runs' metrics in one long table with a ``run`` column (label) and ``run_dir``."""
    frames = []
    labels = run_labels(runs)
    for run in runs:
        df = read_metrics(run)
        if df.empty:
            continue
        df = df.copy()
        df.insert(0, "run", labels[str(run.path)])
        df["run_dir"] = str(run.path)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", *METRIC_COLUMNS, "kind", "run_dir"])


def pareto_points(runs: list[RunDir], long: pd.DataFrame | None = None, label: Callable[[RunDir], str] | None = None,
                  method: Callable[[RunDir], str] | None = None) -> pd.DataFrame:
    """Per run: the mean role-play score and the mean refusal rate (safety), from the metrics'
    kinds; ``long`` (with ``run_dir``, as :func:`compare_metrics` writes) saves reading them again.
    ``label`` and ``method`` name a run (default: the Compare page's labels, the config's method)."""
    rows = []
    labels = run_labels(runs)
    for run in runs:
        df = read_metrics(run) if long is None else long[long["run_dir"] == str(run.path)]
        cfg = RunConfig.of(run)
        rows.append({"run": label(run) if label else labels[str(run.path)],
                     "method": method(run) if method else cfg.method or ("model" if cfg.kind == "eval" else cfg.kind), "lambda": cfg.lam,
                     "roleplay": kind_mean(df, "role-play"), "safety": kind_mean(df, "refusal")})
    return pd.DataFrame(rows, columns=["run", "method", "lambda", "roleplay", "safety"])


def disagreements(a: pd.DataFrame, b: pd.DataFrame, label_a: str = "A", label_b: str = "B") -> pd.DataFrame:
    """Prompts both runs answered where their verdicts differ, side by side."""
    if a.empty or b.empty:
        return pd.DataFrame(columns=["suite", "prompt", f"response {label_a}", f"verdict {label_a}", f"response {label_b}", f"verdict {label_b}"])
    left = a[GENERATION_COLUMNS].drop_duplicates(["suite", "prompt"])
    right = b[GENERATION_COLUMNS].drop_duplicates(["suite", "prompt"])
    merged = left.merge(right, on=["suite", "prompt"], suffixes=(f" {label_a}", f" {label_b}"))
    differ = merged[f"verdict {label_a}"].astype(str) != merged[f"verdict {label_b}"].astype(str)
    return merged[differ].reset_index(drop=True)


# --- lineage: what a run came from and what came of it ---------------------------------------------
# the dashboard page that shows a run of each kind (an evaluation is read on Compare, beside others)
PAGE_OF_KIND = {"score": "scoring", "train": "training", "eval": "compare", "reproduce": "compare", "survey": "survey"}


@dataclass(frozen=True)
class Link:
    """One step of a run's lineage: how it relates (``relation``), a readable ``label``, the run
    folder it names (None for a thing that is no run: a model spec, a report) and the page that shows it."""

    relation: str
    label: str
    path: str | None = None
    page: str | None = None
    select: str | None = None  # the run that page selects to show this one (a training run for its nested evaluations)


def _same(a: str | Path | None, b: str | Path | None) -> bool:
    if not a or not b:
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def _run_link(relation: str, run_dir: str | Path, page_run: str | Path | None = None) -> Link:
    """A link to a run; ``page_run`` is the run its page selects (a training run for its nested evaluations)."""
    run = RunDir(Path(run_dir))
    shown = RunDir(Path(page_run)) if page_run else run
    return Link(relation, run_label(run), str(run.path), PAGE_OF_KIND.get(RunConfig.of(shown).kind), str(shown.path))


def _model_link(spec: str, relation: str = "base model") -> Link:
    """The model a run started from: a link when it is a run folder (a run trained further), else its name."""
    folder = Path(spec).expanduser() if spec else None
    if folder is not None and (folder / "config.json").is_file() and (RunConfig.read(folder) or RunConfig()).kind == "train":
        return _run_link(relation, folder)
    return Link(relation, spec or "the default model (embedded-aligned)")


def _score_run_of(path: str | None) -> Path | None:
    """The score run a side file (``scores.flags.json``: a saved review) lives in, if it does."""
    if not path:
        return None
    folder = Path(path).expanduser().parent
    cfg = RunConfig.read(folder)
    return folder if cfg is not None and cfg.kind == "score" else None


def _dh_record(run_dir: Path) -> dict:
    from sarft_core.store import read_json

    try:
        record = read_json(run_dir / "artifacts" / "dh_ids.json", None)
    except SarftError:
        return {}
    return record if isinstance(record, dict) else {}


def _nested_evals(run_dir: Path) -> list[Path]:
    from sarft_core.evaluation.results import find_eval_runs

    return [p for p in find_eval_runs(run_dir) if p != run_dir]


def lineage(run_dir: str | Path, runs: list[RunDir] | None = None) -> dict[str, list[Link]]:
    """{"parents": [...], "children": [...]} of a run, from what the runs recorded: a training run's
    config names its base model and the reviewed flags it trained on (``--overrides``: a score run's
    ``scores.flags.json``), its ``artifacts/dh_ids.json`` the RDS scores it used; an evaluation names the
    training run it evaluated (``source_run``, or the run whose ``eval/`` folder holds it). Children are
    found the other way round among ``runs`` (default: the workspace's). Reading is defensive: a damaged
    config gives no links, never an error."""
    from sarft_core.store import list_runs

    run_dir = Path(run_dir)
    runs = list_runs() if runs is None else runs
    cfg = RunConfig.read(run_dir) or RunConfig()
    parents: list[Link] = []
    children: list[Link] = []
    if cfg.kind == "score":
        from sarft_core import audit

        parents.append(_model_link(cfg.model))
        review = audit.current_reviews([RunDir(run_dir)])
        if review:
            children.append(Link("review", f"saved review: {audit.review_summary(review[0][1])}", str(run_dir), "scoring", str(run_dir)))
    elif cfg.kind == "train":
        options = cfg.options or {}
        parents.append(_model_link(cfg.model))
        score_run = _score_run_of(options.get("overrides"))
        if score_run is not None:
            parents.append(_run_link("reviewed flags (D_h) from", score_run))
        scores_dir = _dh_record(run_dir).get("scores_dir")
        if isinstance(scores_dir, str) and scores_dir:
            parents.append(Link("RDS scores", scores_dir))
        for nested in _nested_evals(run_dir):
            children.append(_run_link("evaluation", nested, page_run=run_dir))
    elif cfg.kind == "eval":
        source = cfg.eval.source_run if cfg.eval is not None else None
        owner = run_dir.parent.parent if run_dir.parent.name == "eval" else None
        if source or (owner is not None and (RunConfig.read(owner) or RunConfig()).kind == "train"):
            parents.append(_run_link("evaluated run", source or owner))
        else:
            parents.append(_model_link(cfg.model, "evaluated model"))
    for other in runs:
        if _same(other.path, run_dir):
            continue
        other_cfg = RunConfig.of(other)
        if other_cfg.kind == "train" and cfg.kind == "score" and _same(_score_run_of((other_cfg.options or {}).get("overrides")), run_dir):
            children.append(_run_link("training run", other.path))
        elif other_cfg.kind == "train" and cfg.kind == "train" and _same(other_cfg.model, run_dir):
            children.append(_run_link("trained further", other.path))
        elif other_cfg.kind == "eval" and cfg.kind == "train" and other_cfg.eval is not None and _same(other_cfg.eval.source_run, run_dir):
            children.append(_run_link("evaluation", other.path))
    if cfg.kind == "eval" or any(c.relation == "evaluation" for c in children):
        children.append(Link("report", "the HTML report of the evaluated runs (download it on Compare)", None, "compare"))
    return {"parents": parents, "children": children}


# --- the chat window: one prompt to several models, side by side ------------------------------------
SYSTEM_CHOICES = {"profile": "the role's profile", "unsafe": "the profile + the unsafe instruction", "none": "none",
                  "custom": "custom"}


def chat_system(choice: str, profile, custom: str = "") -> str:
    """The system prompt a chat choice stands for: the role's profile (as edited), the profile with
    the unsafe instruction (what RDS scores against), none, or the analyst's own text."""
    if choice not in SYSTEM_CHOICES:
        raise SarftError(f"unknown system prompt choice {choice!r}", f"choose one of {', '.join(SYSTEM_CHOICES)}")
    if choice == "custom" and not custom.strip():
        raise SarftError("the custom system prompt is empty", "write one, or choose none")
    return {"profile": lambda: profile.role_prompt, "unsafe": lambda: profile.unsafe_prompt, "none": lambda: "",
            "custom": lambda: custom}[choice]()


def chat_answers(models: dict[str, object], prompt: str, system: str, max_new_tokens: int = 128) -> dict[str, str]:
    """{name: greedy answer} of each loaded model to one prompt under one system prompt, through the
    evaluation's generation path (the same prompt tokens, the same decoding as ``eval``)."""
    from sarft_core.data.samples import check_text
    from sarft_core.evaluation.generation import GenerationConfig, generate

    if not prompt.strip():
        raise SarftError("the prompt is empty", "type a message to send")
    check_text(prompt, "the prompt")
    config = GenerationConfig(max_new_tokens=max_new_tokens, system_prompt=system or None, batch_size=1)
    return {name: generate(lm, [prompt], config)[0] for name, lm in models.items()}
