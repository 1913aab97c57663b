"""A self-contained HTML audit report of runs and surveys: one file that opens offline anywhere.

``build_report(paths)`` reads what is on disk and returns the HTML; ``write_report`` writes it
atomically; ``report_bytes`` is the same file for a download button. What it can show:

- **role profile**: the role and unsafe system prompts (score runs keep them in
  ``profiles.json``; training runs name the profiles file in their config);
- **RDS**: the s_role / s_unsafe scatter, the margin histogram and the most flagged samples with
  their answer tokens shaded by log π_unsafe − log π_role (score runs: ``scores.parquet``,
  ``scores.tokens.jsonl``, the saved review ``scores.review.json``);
- **training**: CE / KL curves and a summary of the last step (``logs.jsonl`` of kind ``train``);
- **evaluation**: every metric with its confidence interval, bar charts and a few generations
  (an evaluation run's ``metrics.json`` and ``artifacts/<suite>.parquet``: the run itself, or a
  training run's ``eval/<setting>/``; read through :mod:`sarft_core.runview`);
- **comparison** (two runs or more with evaluation, e.g. SFT vs SaRFT): refusal and ROUGE-L per
  suite side by side, the role-play vs safety plane, CE curves overlaid, a metric table with Δ;
- **survey**: a table with a ``role`` column, trait columns and ``degradation`` /
  ``flagged_fraction``: the trait-vs-outcome scatter per trait with Pearson / Spearman, and bars.

Sections appear only when their data exists. Figures come from :mod:`sarft_core.plots`; the
plotly.js library is inlined once, at the first figure, so the file needs no network.
Every piece of text that comes from a dataset, a model or a file is HTML-escaped, and the
settings shown are an allow-list of config fields, so no key, token or environment value can
reach the page.
"""
from __future__ import annotations

import html
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from sarft_core import plots
from sarft_core.errors import SarftError
from sarft_core.store import RunDir, atomic_write_bytes, read_json, read_jsonl, read_table

TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")
OUTCOMES = ("degradation", "flagged_fraction")
KNOWN_TRAITS = ("malevolence", "aggression", "deceptiveness", "benevolence")
# numeric survey columns that are measurements, not traits
NON_TRAIT = re.compile(r"^(safety_|n_|refusal|rouge|roleplay|role_play|seconds|time|lambda|lam$|seed|steps?$|samples|flagged|degradation"
                       r"|mean_margin|margin|score|status)")
SKIP_DIRS = {"checkpoints", "artifacts", "eval", "cache", "__pycache__"}
# the only config fields a report shows (an allow-list: nothing else, e.g. no key, reaches the page)
SHOWN_SETTINGS = ("model", "method", "methods", "screen", "role", "peft", "lam", "lambda", "kl_direction", "normalisation", "tau", "epochs", "lr",
                  "batch_size", "grad_accum", "max_steps", "seed", "limit", "data", "lora_r", "lora_alpha")
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
DEFAULT_EXAMPLES = 8


def esc(value) -> str:
    """Any value as inert HTML text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)


def fmt_num(value, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return esc(value)
    if not math.isfinite(v):
        return "–"
    if isinstance(value, (int, np.integer)) or (v.is_integer() and abs(v) >= 1):
        return f"{int(v)}"
    return f"{v:.{digits}f}" if v == 0 or abs(v) >= 0.01 else f"{v:.{digits}g}"  # small values keep their digits


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-")[:60] or "x"


# --- what to report on ------------------------------------------------------------------------

@dataclass
class Sources:
    runs: list[RunDir] = field(default_factory=list)
    survey_tables: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.runs and not self.survey_tables


def run_kind(run: RunDir) -> str:
    """The run's kind; a bare folder written by ``score --out DIR/scores.parquet`` counts as a score run."""
    kind = run.config().get("kind")
    if not kind and (run.path / "scores.parquet").is_file():
        return "score"
    return str(kind or "")


def is_run(path: Path) -> bool:
    """A run directory: its config.json names a kind (a model's config.json does not), or it holds scores.parquet."""
    if not (path / "config.json").is_file():
        return (path / "scores.parquet").is_file()
    try:
        cfg = read_json(path / "config.json", None)
    except (ValueError, OSError):
        return False
    return isinstance(cfg, dict) and "kind" in cfg


def is_survey_table(path: Path) -> bool:
    """A table with a ``role`` column and a numeric column, that is not a score table."""
    if path.suffix.lower() not in TABLE_SUFFIXES or path.name.startswith(("scores", ".")):
        return False
    try:
        df = read_table(path)
    except (SarftError, OSError, ValueError):
        return False
    return "role" in df and "s_role" not in df and len(df.select_dtypes("number").columns) > 0


def is_survey_dir(path: Path) -> bool:
    """A survey's output directory (``python -m sarft_core survey --out DIR``: a run of kind ``survey``)."""
    return (path / "config.json").is_file() and RunDir(path).config().get("kind") == "survey"


def survey_tables(folder: Path) -> list[Path]:
    """The survey tables at the top of ``folder``; when some carry an outcome, only those
    (a survey also writes ``traits.csv``, which has traits but nothing to correlate them with)."""
    tables = sorted((p for p in folder.iterdir() if p.is_file() and is_survey_table(p)), key=_table_rank)
    with_outcome = [p for p in tables if set(OUTCOMES) & set(read_table(p).columns) or
                    {"safety_before", "safety_after"} <= set(read_table(p).columns)]
    return with_outcome or tables


def _walk(root: Path, depth: int, found: Sources) -> None:
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP_DIRS and not p.name.startswith(".")):
        if is_survey_dir(child):
            found.survey_tables += survey_tables(child)  # its per-role folders belong to the survey
        elif is_run(child):
            found.runs.append(RunDir(child))
        elif depth > 1:
            _walk(child, depth - 1, found)


def discover(path: str | Path, depth: int = 3) -> Sources:
    """Runs and survey tables at ``path``: a run, a survey table, or a folder of either."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SarftError(f"{path} does not exist", "give a run directory, a folder of runs, or a survey directory / table")
    if path.is_file():
        if not is_survey_table(path):
            raise SarftError(f"{path.name} is not a survey table (a .csv/.parquet/.jsonl with a 'role' column and numeric columns)",
                             "give a run directory, a folder of runs, or a survey table")
        return Sources(survey_tables=[path])
    tables = survey_tables(path)
    if is_survey_dir(path):
        if not tables:
            raise SarftError(f"the survey in {path} has no table yet", "let it finish, or rebuild it with `survey ... --aggregate-only`")
        return Sources(survey_tables=tables)
    if is_run(path):
        return Sources(runs=[RunDir(path)], survey_tables=tables)
    found = Sources(survey_tables=tables)
    _walk(path, depth, found)
    return found


def _table_rank(path: Path) -> tuple[int, str]:
    """Survey tables first by how much their name says so."""
    name = path.stem.lower()
    return (0 if "survey" in name else 1 if name in ("summary", "table", "roles", "screening") else 2, name)


def resolve_sources(target: str | Path | None, runs: Iterable[str] = ()) -> Sources:
    """The CLI's view: TARGET, plus runs named with ``--runs`` (paths, or names inside TARGET)."""
    runs = [r.strip() for r in runs if r and r.strip()]
    if not runs:
        if target is None:
            raise SarftError("nothing to report on", "give a run or survey directory, or --runs A,B")
        return discover(target)
    base = Path(target).expanduser() if target else None
    out = Sources()
    for name in runs:
        candidates = [Path(name).expanduser()] + ([base / name] if base is not None else [])
        path = next((c for c in candidates if c.is_dir() and is_run(c)), None)
        if path is None:
            raise SarftError(f"--runs: {name} is not a run directory" + (f" (looked in {base} too)" if base else ""),
                             "give paths of run directories (holding config.json), or names of runs inside the directory given")
        out.runs.append(RunDir(path))
    if base is not None and base.is_dir() and not is_run(base):
        out.survey_tables = discover(base).survey_tables
    return out


# --- figures: plotly.js inlined once ------------------------------------------------------------

class Figures:
    """Turns figures into ``<div>``s; the first one carries plotly.js itself."""

    def __init__(self):
        self.count = 0

    def html(self, fig, name: str) -> str:
        import plotly.io as pio

        div = pio.to_html(fig, include_plotlyjs=self.count == 0, full_html=False, config=PLOTLY_CONFIG,
                          div_id=f"fig-{self.count}-{slug(name)}")
        self.count += 1
        return f'<div class="figure" data-figure="{esc(name)}">{div}</div>'


# --- small HTML pieces ---------------------------------------------------------------------------

def table_html(rows: list[dict], columns: list[str], numeric: Iterable[str] = (), cls: str = "") -> str:
    numeric = set(numeric)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{fmt_num(row.get(c))}</td>' if c in numeric else f"<td>{esc(row.get(c))}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def settings_html(cfg: dict) -> str:
    flat = dict(cfg)
    flat.update({k: v for k, v in (cfg.get("train") or {}).items() if k not in flat} if isinstance(cfg.get("train"), dict) else {})
    items = [(k, flat[k]) for k in SHOWN_SETTINGS if flat.get(k) not in (None, "", [])]
    if not items:
        return ""
    return '<dl class="settings">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


def section(sid: str, title: str, body: str, intro: str = "") -> str:
    intro = f'<p class="intro">{intro}</p>' if intro else ""
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{intro}{body}</section>'


def run_label(run: RunDir) -> str:
    """``name (method, role, λ=...)``; λ read from the config's top level or its ``train`` block."""
    from sarft_core.runview import run_label as label

    cfg, lam = run.config(), run_lambda(run)
    if run_kind(run) == "eval" and not cfg.get("method"):
        return f"{run.name} (" + (f"evaluation of {Path(str(cfg['source_run'])).name}" if cfg.get("source_run") else "base model") + ")"
    if cfg.get("lambda") is None and lam is not None and cfg.get("method") not in (None, "sft"):
        cfg_bits = [str(b) for b in (cfg.get("method"), cfg.get("role")) if b] + [f"λ={lam}"]
        return f"{run.name} ({', '.join(cfg_bits)})"
    return label(run)


def run_lambda(run: RunDir) -> float | None:
    from sarft_core.runview import run_lambda as from_config

    return from_config(run.config())


# --- role profile ---------------------------------------------------------------------------------

def run_role(run: RunDir) -> str:
    """The run's role: from its config, else from its scores (a bare ``score --out`` folder)."""
    role = run.config().get("role")
    if role or not (run.path / "scores.parquet").is_file():
        return str(role or "")
    try:
        roles = pd.read_parquet(run.path / "scores.parquet", columns=["role"])["role"].dropna().unique()
    except (OSError, ValueError, KeyError):
        return ""
    return str(roles[0]) if len(roles) == 1 else ""


def run_profile(run: RunDir) -> dict | None:
    """{"name", "profile", "unsafe_prompt"} of a run's role, from what the run recorded."""
    cfg = run.config()
    saved = read_json(run.path / "profiles.json", None) if (run.path / "profiles.json").is_file() else None
    if isinstance(saved, list) and saved and isinstance(saved[0], dict):
        item = saved[0]
        return {"name": item.get("name") or cfg.get("role"), "profile": item.get("profile", ""), "unsafe_prompt": item.get("unsafe_prompt", "")}
    if cfg.get("role_prompt"):
        return {"name": cfg.get("role"), "profile": cfg["role_prompt"], "unsafe_prompt": cfg.get("unsafe_prompt", "")}
    role = run_role(run)
    if not role:
        return None
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles

    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    source = train.get("profiles") or cfg.get("profiles") or DEMO_PROFILES
    try:
        prof = get_profile(load_profiles(source), role)
        return {"name": prof.name, "profile": prof.role_prompt, "unsafe_prompt": prof.unsafe_prompt}
    except (SarftError, OSError, KeyError, ValueError):
        return {"name": role, "profile": "", "unsafe_prompt": ""}


def profile_section(runs: list[RunDir]) -> str:
    seen, cards = set(), []
    for run in runs:
        prof = run_profile(run)
        if not prof or not prof.get("name"):
            continue
        key = (prof["name"], prof.get("profile"), prof.get("unsafe_prompt"))
        if key in seen:
            continue
        seen.add(key)
        body = f'<h3>{esc(prof["name"])}</h3>'
        if prof.get("profile"):
            body += f'<h4>Role system prompt</h4><div class="prompt">{esc(prof["profile"])}</div>'
            body += f'<h4>Unsafe system prompt</h4><div class="prompt">{esc(prof.get("unsafe_prompt", ""))}</div>'
        else:
            body += '<p class="muted">The profile this run used could not be found.</p>'
        cards.append(f'<article class="card profile">{body}</article>')
    if not cards:
        return ""
    return section("profile", "Role profile", "".join(cards),
                   "RDS scores each answer under the role prompt and under the unsafe prompt (the role prompt with an "
                   "instruction to drop moral and legal limits), against the model with no system prompt.")


# --- RDS ---------------------------------------------------------------------------------------

def flagged_examples_html(scores: pd.DataFrame, flags: pd.Series, tokens: dict, n: int) -> str:
    df = scores.reset_index(drop=True).assign(margin=scores["s_unsafe"].astype(float).to_numpy() - scores["s_role"].astype(float).to_numpy(),
                                              flagged=list(flags))
    shown = df[df["flagged"]].sort_values("margin", ascending=False).head(n)
    note = ""
    if shown.empty:
        shown = df.sort_values("margin", ascending=False).head(min(3, n))
        note = '<p class="muted">No sample is flagged; the samples closest to the threshold:</p>'
    cards = []
    for _, row in shown.iterrows():
        tok = tokens.get(str(row["id"]))
        if tok and tok.get("tokens") and len(tok["tokens"]) == len(tok.get("ratio", [])):
            answer = plots.token_spans_html(plots.token_shading(tok["tokens"], tok["ratio"]))  # every token escaped there
        else:
            answer = f'<div class="text">{esc(row["output"])}</div>'
        cards.append(
            f'<article class="card example" data-sample="{esc(row["id"])}">'
            f'<div class="meta"><b>{esc(row["id"])}</b> · margin {fmt_num(row["margin"])} · s_role {fmt_num(row["s_role"])} · '
            f's_unsafe {fmt_num(row["s_unsafe"])} · {"flagged" if row["flagged"] else "kept"}</div>'
            f'<h4>Question</h4><div class="text">{esc(row["input"])}</div><h4>Answer</h4>{answer}</article>'
        )
    legend = ('<p class="muted">Answer tokens are shaded by log π_unsafe − log π_role: red where the unsafe prompt makes the '
              'token likelier, blue where the role prompt does (hover a token for its value).</p>') if tokens else ""
    return note + legend + "".join(cards)


def rds_block(run: RunDir, figures: Figures, n_examples: int, review: tuple[float, dict] | None = None) -> str:
    from sarft_core import audit

    scores = audit.load_scores(run)
    scores_path = run.path / audit.SCORES_FILE
    tau, overrides = review if review is not None else audit.load_review(scores_path)
    flags = plots.effective_flags(scores, tau, overrides)
    tokens = audit.load_token_ratios(run)
    cfg = run.config()
    stats = [{"samples": len(scores), "flagged (D_h)": int(flags.sum()), "flagged fraction": float(flags.mean()) if len(flags) else math.nan,
              "τ": tau, "overrides": len(overrides)}]
    summary = table_html(stats, list(stats[0]), numeric=list(stats[0]), cls="summary")
    # a grid with fixed tracks: each figure measures its final width even before the next one exists
    figs = (f'<div class="row rds"><div class="col">{figures.html(plots.rds_scatter(scores, flags, tau), "rds-scatter")}</div>'
            f'<div class="col">{figures.html(plots.margin_histogram(scores, tau), "rds-histogram")}</div></div>')
    examples = flagged_examples_html(scores, flags, tokens, n_examples)
    review_note = "the analyst's saved review" if (scores_path.with_name("scores.review.json")).is_file() or review else "τ = 0, no review saved"
    return (f'<article class="run" id="rds-{slug(run.name)}"><h3>{esc(run_role(run) or run.name)} · {esc(run.name)}</h3>'
            f'{settings_html(cfg)}<p class="muted">Flags follow {review_note}.</p>{summary}{figs}'
            f'<h4>Most flagged samples</h4>{examples}</article>')


# --- training ------------------------------------------------------------------------------------

def training_logs(run: RunDir) -> pd.DataFrame:
    rows = [r for r in read_jsonl(run.log_path) if isinstance(r, dict) and "step" in r]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df = df.dropna(subset=["step"]).sort_values("step")
    return df.drop_duplicates("step", keep="last")  # a resumed run may log a step twice


def training_block(run: RunDir, logs: pd.DataFrame, figures: Figures) -> str:
    cfg = run.config()
    last = logs.iloc[-1]
    stat = {"steps": last["step"], "method": cfg.get("method", ""), "λ": run_lambda(run)}
    for col in ("loss", "ce", "kl", "lr"):
        if col in logs and logs[col].notna().any():
            stat[f"final {col}"] = logs[col].dropna().iloc[-1]
    if "harmful_in_batch" in logs:
        stat["D_h rows seen"] = pd.to_numeric(logs["harmful_in_batch"], errors="coerce").sum()
    dh = read_json(run.path / "artifacts" / "dh_ids.json", None)
    if isinstance(dh, dict) and isinstance(dh.get("dh_ids"), list):
        stat["|D_h|"] = len(dh["dh_ids"])
    state = run.status().get("state", "?")
    numeric = [k for k in stat if k not in ("method",)]
    return (f'<article class="run" id="train-{slug(run.name)}"><h3>{esc(run_label(run))}</h3>'
            f'{settings_html(cfg)}<p class="muted">state: {esc(state)}</p>{table_html([stat], list(stat), numeric=numeric, cls="summary")}'
            f'{figures.html(plots.training_curves(logs), "training-curves")}</article>')


# --- evaluation ---------------------------------------------------------------------------------

EVAL_COLUMNS = ["suite", "metric", "value", "ci_low", "ci_high", "n"]


def _present(value) -> bool:
    return value is not None and str(value) not in ("", "nan", "None", "<NA>")


def has_evaluation(run: RunDir) -> bool:
    from sarft_core.runview import has_eval

    return has_eval(run)


def run_metrics(run: RunDir) -> pd.DataFrame:
    """A run's evaluation metrics (through :mod:`sarft_core.runview`) as rows of :data:`EVAL_COLUMNS`:
    the group is folded into the suite label (``xstest · unsafe``), the judge into the metric label
    (``refusal_rate (keyword)``), and the setting's folder prefixes the suite when there are several."""
    from sarft_core.runview import read_metrics

    df = read_metrics(run)
    if df.empty:
        return pd.DataFrame(columns=EVAL_COLUMNS)
    df = df.copy()
    groups = df["group"] if "group" in df else [None] * len(df)
    judges = df["judge"] if "judge" in df else [None] * len(df)
    df["suite"] = [f"{s} · {g}" if _present(g) else str(s) for s, g in zip(df["suite"], groups)]
    df["metric"] = [f"{m} ({j})" if _present(j) else str(m) for m, j in zip(df["metric"], judges)]
    if "eval_dir" in df and df["eval_dir"].nunique() > 1:
        df["suite"] = [f"{Path(str(d)).name} · {s}" for d, s in zip(df["eval_dir"], df["suite"])]
    return df[EVAL_COLUMNS].reset_index(drop=True)


def run_generations(run: RunDir) -> pd.DataFrame:
    """Prompts, responses and verdicts of a run's evaluations (through :mod:`sarft_core.runview`)."""
    from sarft_core.runview import read_generations

    df = read_generations(run)
    if "group" in df and not df.empty:
        df = df.assign(suite=[f"{s} · {g}" if _present(g) else str(s) for s, g in zip(df["suite"], df["group"])])
    return df


def suite_axis(df: pd.DataFrame) -> pd.DataFrame:
    """x labels for metric bars: the suite, plus the metric when a run has several per suite."""
    df = df.copy()
    several = df.groupby(["run", "suite"])["metric"].transform("nunique") > 1
    df["suite"] = [f"{s} · {m}" if many else str(s) for s, m, many in zip(df["suite"], df["metric"], several)]
    return df


def metrics_rows(metrics: pd.DataFrame) -> list[dict]:
    rows = []
    for _, r in metrics.iterrows():
        ci = f"[{fmt_num(r['ci_low'])}, {fmt_num(r['ci_high'])}]" if pd.notna(r["ci_low"]) and pd.notna(r["ci_high"]) else "–"
        rows.append({"suite": r["suite"], "metric": r["metric"], "value": r["value"], "95% CI": ci, "n": r["n"]})
    return rows


def generations_html(gens: pd.DataFrame, n: int) -> str:
    if gens.empty or n == 0:
        return ""
    per_suite = max(1, n // max(1, gens["suite"].nunique()))
    pick = gens.groupby("suite", sort=False, dropna=False).head(per_suite).head(n)
    rows = [{"suite": r["suite"], "verdict": r["verdict"], "prompt": r["prompt"], "response": r["response"]} for _, r in pick.iterrows()]
    return (f'<details><summary>{len(pick)} of {len(gens)} generations</summary>'
            f'{table_html(rows, ["suite", "verdict", "prompt", "response"], cls="generations")}</details>')


def eval_block(run: RunDir, figures: Figures, n_examples: int) -> str:
    head = f'<article class="run" id="eval-{slug(run.name)}"><h3>{esc(run_label(run))}</h3>'
    try:
        metrics = run_metrics(run)
        generations = run_generations(run)
    except SarftError as err:  # one unreadable evaluation does not cost the rest of the report
        return head + f'<p class="warning">Its evaluation could not be read: {esc(err.problem)}. {esc(err.fix or "")}</p></article>'
    if metrics.empty:
        return ""
    long = metrics.assign(run=run_label(run))
    margin = long["metric"].str.match(r"margin( |$)")  # nats, not a rate
    rouge = long["metric"].map(is_roleplay_metric)
    figs = []
    for name, label, sub in (("eval-metrics", "rates", long[~margin & ~rouge]), ("eval-rouge", "ROUGE-L", long[rouge]),
                             ("eval-margin", "refusal margin (nats)", long[margin])):
        if sub.empty:
            continue
        fig = plots.refusal_bars(suite_axis(sub), label)
        fig.update_layout(title=f"{label} per suite (error bars: 95% CI)", showlegend=False)
        figs.append(f'<div class="col">{figures.html(fig, name)}</div>')
    layout = "row rds" if len(figs) > 1 else ""
    return (head + table_html(metrics_rows(metrics), ["suite", "metric", "value", "95% CI", "n"], numeric=["value", "n"], cls="metrics")
            + f'<div class="{layout}">{"".join(figs)}</div>{generations_html(generations, n_examples)}</article>')


def is_refusal_metric(name: str) -> bool:
    from sarft_core.runview import is_refusal_metric as check

    return check(name)


def is_roleplay_metric(name: str) -> bool:
    from sarft_core.runview import is_roleplay_metric as check

    return check(name)


def is_compliance_metric(name: str) -> bool:
    return str(name).lower().startswith("compliance")


# --- comparison -----------------------------------------------------------------------------------

def comparison_table(long: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """One row per (suite, metric), one column per run: value [CI]; Δ when exactly two runs."""
    labels = list(dict.fromkeys(long["run"]))
    rows = []
    for (suite, metric), sub in long.groupby(["suite", "metric"], sort=False):
        row = {"suite": suite, "metric": metric}
        values = {}
        for label in labels:
            hit = sub[sub["run"] == label]
            if hit.empty:
                row[label] = "–"
                continue
            r = hit.iloc[0]
            values[label] = r["value"]
            ci = f" [{fmt_num(r['ci_low'])}, {fmt_num(r['ci_high'])}]" if pd.notna(r["ci_low"]) and pd.notna(r["ci_high"]) else ""
            row[label] = f"{fmt_num(r['value'])}{ci}"
        if len(labels) == 2 and len(values) == 2:
            row["Δ (2nd − 1st)"] = fmt_num(values[labels[1]] - values[labels[0]])
        rows.append(row)
    cols = ["suite", "metric", *labels] + (["Δ (2nd − 1st)"] if len(labels) == 2 else [])
    return rows, cols


METHOD_ORDER = {"base": 0, "sft": 1, "sarft": 2}
KIND_ORDER = {"score": 0, "train": 1}


def order_for_comparison(runs: list[RunDir]) -> list[RunDir]:
    """SFT before SaRFT (then the other methods), so Δ reads as SaRFT − SFT."""
    return sorted(runs, key=lambda r: METHOD_ORDER.get(run_method(r).lower(), 3))


def report_order(run: RunDir) -> tuple:
    return (KIND_ORDER.get(run_kind(run), 2), METHOD_ORDER.get(run_method(run).lower(), 3), run.name)


def run_method(run: RunDir) -> str:
    cfg = run.config()
    if cfg.get("method"):
        return str(cfg["method"])
    return "base" if run_kind(run) == "eval" and not cfg.get("source_run") else ""


def pareto_points(long: pd.DataFrame, runs: list[RunDir]) -> pd.DataFrame:
    """Per run: mean role-play score (ROUGE-L metrics) and mean refusal rate on harmful prompts."""
    rows = []
    for run in runs:
        sub = long[long["run_dir"] == str(run.path)]
        rp = sub[sub["metric"].map(is_roleplay_metric)]["value"].dropna()
        sf = sub[sub["metric"].map(is_refusal_metric)]["value"].dropna()
        rows.append({"run": run_label(run), "method": run_method(run) or run_kind(run), "lambda": run_lambda(run),
                     "roleplay": float(rp.mean()) if len(rp) else math.nan, "safety": float(sf.mean()) if len(sf) else math.nan})
    return pd.DataFrame(rows, columns=["run", "method", "lambda", "roleplay", "safety"])


def readable_metrics(runs: list[RunDir]) -> list[tuple[RunDir, pd.DataFrame]]:
    """(run, metrics) of the runs with readable, non-empty evaluations (unreadable ones are shown
    as such in their evaluation block)."""
    out = []
    for run in runs:
        try:
            metrics = run_metrics(run)
        except SarftError:
            continue
        if not metrics.empty:
            out.append((run, metrics))
    return out


def comparison_section(runs: list[RunDir], logs: dict[str, pd.DataFrame], figures: Figures) -> str:
    evaluated = readable_metrics(order_for_comparison([r for r in runs if has_evaluation(r)]))
    trained = order_for_comparison([r for r in runs if r.name in logs])
    parts, compared = [], trained
    if len(evaluated) >= 2:
        compared = [r for r, _ in evaluated]
        long = pd.concat([m.assign(run=run_label(r), run_dir=str(r.path)) for r, m in evaluated], ignore_index=True)
        charts = (("refusal", is_refusal_metric, "refusal rate on harmful prompts (higher is safer)"),
                  ("compliance", is_compliance_metric, "compliance on harmless prompts (lower = over-refusal)"),
                  ("rouge", is_roleplay_metric, "ROUGE-L"))
        for name, keep, label in charts:
            sub = long[long["metric"].map(keep)]
            if not sub.empty:
                parts.append(figures.html(plots.refusal_bars(suite_axis(sub), label), f"compare-{name}"))
        parts.append(figures.html(plots.pareto_scatter(pareto_points(long, compared)), "compare-pareto"))
        rows, cols = comparison_table(long)
        parts.append(table_html(rows, cols, cls="compare"))
    if len(trained) >= 2:
        parts.append(figures.html(plots.curves_overlay({run_label(r): logs[r.name] for r in trained}, "ce"), "compare-ce"))
    if not parts:
        return ""
    names = ", ".join(esc(run_label(r)) for r in compared)
    return section("comparison", "SFT vs SaRFT: runs compared", "".join(parts),
                   f"Runs: {names}. Higher refusal on harmful prompts is safer; compliance on harmless look-alikes shows "
                   "over-refusal; ROUGE-L measures role-play quality.")


# --- survey ------------------------------------------------------------------------------------

def survey_frame(path: Path) -> pd.DataFrame:
    df = read_table(path)
    for col in OUTCOMES:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "degradation" not in df and {"safety_before", "safety_after"} <= set(df.columns):
        df["degradation"] = pd.to_numeric(df["safety_before"], errors="coerce") - pd.to_numeric(df["safety_after"], errors="coerce")
    return df


def survey_traits(df: pd.DataFrame) -> list[str]:
    numeric = list(df.select_dtypes("number").columns)
    known = [t for t in KNOWN_TRAITS if t in numeric]
    rest = [c for c in numeric if c not in known and c not in OUTCOMES and not NON_TRAIT.match(c.lower())]
    return known + rest


def survey_block(path: Path, figures: Figures) -> str:
    df = survey_frame(path)
    outcomes = [o for o in OUTCOMES if o in df and pd.to_numeric(df[o], errors="coerce").notna().sum() >= 2]
    traits = survey_traits(df)
    head = f'<article class="run" id="survey-{slug(path.stem)}"><h3>{esc(path.name)} · {df["role"].nunique()} roles</h3>'
    if is_survey_dir(path.parent):
        head += settings_html(RunDir(path.parent).config())
    if not outcomes or not traits:
        missing = "outcome column (degradation or flagged_fraction)" if not outcomes else "trait column"
        return head + f'<p class="muted">This table has no {esc(missing)}.</p>' + table_html(df.head(50).to_dict("records"), list(df.columns)) + "</article>"
    groups = [(None, df)]
    if "method" in df and df["method"].nunique() > 1:
        groups = [(str(m), sub) for m, sub in df.groupby("method", sort=False)]
    stats, figs = [], []
    for method, sub in groups:
        for outcome in outcomes:
            for trait in traits:
                row = {"method": method or "", "outcome": outcome, "trait": trait, **plots.correlations(sub[trait], sub[outcome])}
                stats.append(row)
        main = outcomes[0]
        scatters = []
        for trait in traits:
            fig = plots.trait_scatter(sub, trait, main)
            if method:
                fig.update_layout(title=f"[{esc(method)}] " + fig.layout.title.text)
            fig.update_layout(title_font_size=13)
            scatters.append(f'<div class="col">{figures.html(fig, f"trait-{trait}")}</div>')
        figs.append(f'<div class="row">{"".join(scatters)}</div>')
        fig = plots.per_role_bars(sub, main)
        if method:
            fig.update_layout(title=f"[{esc(method)}] " + fig.layout.title.text)
        figs.append(figures.html(fig, f"role-bars-{main}"))
    cols = (["method"] if groups[0][0] else []) + ["outcome", "trait", "n", "pearson_r", "pearson_p", "spearman_r", "spearman_p"]
    shown = [c for c in ("role", "method", *traits, *outcomes) if c in df] + [c for c in df.columns if c.startswith("safety_")]
    table = table_html(df[shown].to_dict("records"), shown, numeric=[c for c in shown if c not in ("role", "method")], cls="survey")
    return (head + "<h4>Correlation of each trait with the outcome</h4>"
            + table_html(stats, cols, numeric=cols[-5:], cls="correlations") + "".join(figs)
            + f"<details><summary>The table ({len(df)} rows)</summary>{table}</details></article>")


# --- the whole report ------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#2b2d42;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:1.5em}
header p{margin:2px 0;opacity:.85;font-size:.9em}nav{padding:8px 32px;background:#eee;font-size:.9em}
nav a{margin-right:14px;color:#2b2d42}main{padding:8px 32px 40px;max-width:1400px}
section{margin-top:28px}h2{border-bottom:2px solid #d62728;padding-bottom:4px}h3{margin:18px 0 6px}
h4{margin:10px 0 4px;font-size:.95em;color:#555}.intro,.muted{color:#666;font-size:.92em}.warning{color:#a33;background:#fdecea;padding:6px 10px;border-radius:4px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:10px 0}
.run{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:6px 16px 14px;margin:14px 0}
.prompt,.text{white-space:pre-wrap;background:#f6f6f6;padding:8px;border-radius:4px;font-size:.92em}
.meta{font-size:.88em;color:#444}table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}table.generations td{max-width:520px;white-space:pre-wrap}
dl.settings{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:.88em;margin:6px 0}
dl.settings dt{color:#666}dl.settings dd{margin:0;word-break:break-all}
.row{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px}.row.rds{grid-template-columns:minmax(0,3fr) minmax(0,2fr)}
@media (max-width:900px){.row,.row.rds{grid-template-columns:minmax(0,1fr)}}
"""


def build_report(sources: Sources, title: str | None = None, n_examples: int = DEFAULT_EXAMPLES,
                 reviews: dict[str, tuple[float, dict]] | None = None) -> str:
    """The report's HTML. ``reviews`` (run dir -> (tau, overrides)) replaces a run's saved review."""
    if sources.empty:
        raise SarftError("nothing to report: no run directory (config.json with a kind) and no survey table found",
                         "give a score / training run directory, a folder of runs, or a survey directory / table")
    reviews = {str(Path(k)): v for k, v in (reviews or {}).items()}
    figures = Figures()
    runs = sorted(sources.runs, key=report_order)
    sections = [section("summary", "Runs and tables", summary_html(sources))]
    sections.append(profile_section(runs))
    rds = [rds_block(r, figures, n_examples, reviews.get(str(r.path))) for r in runs
           if run_kind(r) == "score" and (r.path / "scores.parquet").is_file()]
    if rds:
        sections.append(section("rds", "RDS: which samples are flagged, and why", "".join(rds),
                                "s_role = log π_role(y|x) − log π_ref(y|x) and s_unsafe = log π_unsafe(y|x) − log π_ref(y|x), "
                                "mean per answer token. A sample is flagged harmful (joins D_h) when s_unsafe − s_role > τ."))
    logs = {r.name: df for r in runs if run_kind(r) == "train" and not (df := training_logs(r)).empty}
    train_blocks = [training_block(r, logs[r.name], figures) for r in runs if r.name in logs]
    if train_blocks:
        sections.append(section("training", "Training curves", "".join(train_blocks),
                                "L = CE(D) + λ·KL(D_h): cross-entropy on every sample, and on the flagged samples a KL term "
                                "that keeps the model close to the frozen base (SFT: λ = 0)."))
    evals = [b for r in runs if has_evaluation(r) and (b := eval_block(r, figures, n_examples))]
    if evals:
        sections.append(section("evaluation", "Evaluation", "".join(evals),
                                "Each metric with its 95% confidence interval (bootstrap over prompts) and n usable prompts."))
    sections.append(comparison_section(runs, logs, figures))
    surveys = [survey_block(p, figures) for p in sources.survey_tables]
    if surveys:
        sections.append(section("survey", "Survey: character traits vs safety", "".join(surveys),
                                "One point per role: a trait score (x) against the safety outcome (y): degradation = refusal "
                                "rate before − after fine-tuning, or the RDS flagged fraction of a screening run."))
    sections = [s for s in sections if s]
    nav = "".join(f'<a href="#{sid}">{esc(name)}</a>' for sid, name in
                  re.findall(r'<section id="([a-z]+)"><h2>([^<]*)</h2>', "".join(sections)))
    title = title or default_title(sources)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><p>SaRFT Studio audit report · generated {esc(stamp)} · '
        f'{len(runs)} run(s), {len(sources.survey_tables)} survey table(s), {figures.count} figure(s)</p></header>'
        f"<nav>{nav}</nav><main>{''.join(sections)}</main></body></html>\n"
    )


def default_title(sources: Sources) -> str:
    roles = list(dict.fromkeys(role for r in sources.runs if (role := run_role(r))))
    if sources.survey_tables and not sources.runs:
        return "Survey report"
    if len(roles) == 1:
        return f"Safety audit: {roles[0]}"
    return "Safety audit report"


def summary_html(sources: Sources) -> str:
    from sarft_core.runview import runs_table

    parts = []
    if sources.runs:
        runs = sorted(sources.runs, key=report_order)
        table = runs_table(runs)
        table["kind"] = [run_kind(r) for r in runs]
        table["state"] = [s if r.status_path.is_file() else "(no status)" for s, r in zip(table["state"], runs)]
        table["role"] = [run_role(r) for r in runs]
        table["lambda"] = [run_lambda(r) for r in runs]
        cols = ["run", "kind", "state", "role", "method", "lambda", "updated"]
        parts.append(table_html(table.to_dict("records"), cols, numeric=["lambda"], cls="runs"))
    if sources.survey_tables:
        parts.append("<p>Survey tables: " + ", ".join(f"<code>{esc(p.name)}</code>" for p in sources.survey_tables) + "</p>")
    return "".join(parts)


def report_bytes(paths: Iterable[str | Path] | str | Path, title: str | None = None, n_examples: int = DEFAULT_EXAMPLES,
                 reviews: dict[str, tuple[float, dict]] | None = None) -> bytes:
    """The report as UTF-8 bytes (a download button's data) for a run, several runs, or a survey."""
    return build_report(sources_of(paths), title, n_examples, reviews).encode("utf-8")


def sources_of(paths: Iterable[str | Path] | str | Path) -> Sources:
    if isinstance(paths, (str, Path)):
        return discover(paths)
    merged = Sources()
    for p in paths:
        found = discover(p)
        merged.runs += [r for r in found.runs if r.path not in {x.path for x in merged.runs}]
        merged.survey_tables += [t for t in found.survey_tables if t not in merged.survey_tables]
    return merged


def write_report(sources: Sources, out: str | Path, title: str | None = None, n_examples: int = DEFAULT_EXAMPLES) -> tuple[Path, int]:
    """Write the report atomically; returns the path and the number of figures."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise SarftError(f"the report is HTML, but --out ends in {out.suffix or '(nothing)'}", "name the output e.g. report.html")
    text = build_report(sources, title, n_examples)
    atomic_write_bytes(out, text.encode("utf-8"))
    return out, text.count('class="figure"')
