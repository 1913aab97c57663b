"""A self-contained HTML audit report of runs and surveys: one file that opens offline anywhere.

``build_report(paths)`` reads what is on disk and returns the HTML; ``write_report`` writes it
atomically; ``report_bytes`` is the same file for a download button. What it can show:

- **role profile**: the role and unsafe system prompts (score runs keep them in
  ``profiles.json``; training runs name the profiles file in their config);
- **RDS**: the s_role / s_unsafe scatter, the margin histogram and the most flagged samples with
  their answer tokens shaded by log π_unsafe − log π_role (score runs: ``scores.parquet``,
  ``scores.tokens.jsonl``, the saved review ``scores.review.json``; each only beside the very table
  it was made for, else named and ignored);
- **training**: CE / KL curves and a summary of the last step (``logs.jsonl`` of kind ``train``);
- **evaluation**: every metric with its confidence interval, bar charts and a few generations
  (an evaluation run's ``metrics.json`` and ``artifacts/<suite>.parquet``: the run itself, or a
  training run's ``eval/<setting>/``; read through :mod:`sarft_core.runview`);
- **comparison** (two runs or more with evaluation, e.g. SFT vs SaRFT): refusal and ROUGE-L per
  suite side by side, the role-play vs safety plane, CE curves overlaid, a metric table with Δ;
- **survey**: a table with a ``role`` column, trait columns and ``degradation`` /
  ``flagged_fraction``: the trait-vs-outcome scatter per trait with Pearson / Spearman, and bars.

Sections appear only when their data exists. The module is in three parts: what to report on
(:mod:`sarft_core.report_sources`: discovery and run metadata, labels through :mod:`sarft_core.runview`),
the data of each section (here: plain dicts and lists), and the page itself, the Jinja2 template
``sarft_core/templates/report.html.j2`` with its stylesheet ``report.css`` (:mod:`sarft_core.templating`).
Which chart a metric joins comes from the metric registry (:mod:`sarft_core.evaluation.metric_registry`):
a metric nobody declared is shown as "other", never left out.

Figures come from :mod:`sarft_core.plots`; the plotly.js library is inlined once, at the first
figure, so the file needs no network. The template autoescapes every value: text from a dataset,
a model, a run's name or a file is always text; the only trusted markup is a plotly figure's own
``<div>``. The settings shown are an allow-list of config fields, so no key, token or environment
value can reach the page.
"""
from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Iterable

import pandas as pd

from sarft_core import plots
from sarft_core.errors import SarftError
from sarft_core.report_sources import (OUTCOMES, Sources, discover, is_survey_dir, order_for_comparison, report_order,  # noqa: F401
                                       resolve_sources, run_kind, run_label, run_lambda, run_method, run_profile, run_role,
                                       sources_of)
from sarft_core.runconfig import RunConfig
from sarft_core.store import RunDir, atomic_write_bytes, read_json, read_jsonl
from sarft_core.surveyview import (KNOWN_TRAITS, NON_TRAIT, correlation_rows, flag_trust_columns, flag_trust_table,  # noqa: F401
                                  outcome_columns, small_n_warning, survey_frame, trait_columns, unconfident_note)
from sarft_core.templating import Figures, fmt_num, render

# the only config fields a report shows (an allow-list: nothing else, e.g. no key, reaches the page)
SHOWN_SETTINGS = ("model", "model_fingerprint", "method", "methods", "screen", "role", "peft", "lam", "lambda", "kl_direction", "normalisation", "tau", "epochs", "lr",
                  "batch_size", "grad_accum", "max_steps", "seed", "limit", "data", "lora_r", "lora_alpha")
DEFAULT_EXAMPLES = 8


# --- section data: what the template shows ---------------------------------------------------------

def table(rows: list[dict], columns: list[str], numeric: Iterable[str] = (), cls: str = "") -> dict:
    """A table for the template: numeric columns are formatted (:func:`fmt_num`), the rest shown as text."""
    return {"rows": rows, "columns": list(columns), "numeric": set(numeric), "cls": cls}


def settings(run: RunDir) -> list[tuple[str, object]]:
    """The allow-listed settings of a run's config (its training options' too)."""
    flat = RunConfig.of(run).flat()
    return [(k, flat[k]) for k in SHOWN_SETTINGS if flat.get(k) not in (None, "", [])]


def section(sid: str, title: str, blocks: list, intro: str = "") -> dict | None:
    """A section of the page: its blocks are drawn by the template's macro named ``sid``."""
    return {"id": sid, "title": title, "blocks": blocks, "intro": intro} if blocks else None


# --- role profile ---------------------------------------------------------------------------------

def profile_section(runs: list[RunDir]) -> dict | None:
    seen, cards = set(), []
    for run in runs:
        prof = run_profile(run)
        if not prof or not prof.get("name"):
            continue
        key = (prof["name"], prof.get("profile"), prof.get("unsafe_prompt"))
        if key not in seen:
            seen.add(key)
            cards.append({"name": prof["name"], "profile": prof.get("profile"), "unsafe_prompt": prof.get("unsafe_prompt", "")})
    return section("profile", "Role profile", cards,
                   "RDS scores each answer under the role prompt and under the unsafe prompt (the role prompt with an "
                   "instruction to drop moral and legal limits), against the model with no system prompt.")


# --- RDS ---------------------------------------------------------------------------------------

def flagged_examples(scores: pd.DataFrame, flags: pd.Series, tokens: dict, n: int, verdicts: pd.Series | None = None) -> tuple[list[dict], bool]:
    """The most flagged samples (or, when none is, the closest to the threshold: ``True`` second),
    each with its verdict and the margin's standard error where the table records them."""
    from sarft_core.flags import flag_margin

    shown_verdicts = list(verdicts) if verdicts is not None else [None] * len(scores)
    df = scores.reset_index(drop=True).assign(margin=flag_margin(scores).to_numpy(), flagged=list(flags), verdict_shown=shown_verdicts)
    shown = df[df["flagged"]].sort_values("margin", ascending=False).head(n)
    closest = shown.empty
    if closest:
        shown = df.sort_values("margin", ascending=False).head(min(3, n))
    examples = []
    for _, row in shown.iterrows():
        tok = tokens.get(str(row["id"]))
        spans = None
        if tok and tok.get("tokens") and len(tok["tokens"]) == len(tok.get("ratio", [])):
            spans = plots.token_spans(plots.token_shading(tok["tokens"], tok["ratio"]))
        examples.append({"id": row["id"], "margin": row["margin"], "s_role": row["s_role"], "s_unsafe": row["s_unsafe"],
                         "flagged": bool(row["flagged"]), "input": row["input"], "output": row["output"], "tokens": spans,
                         "verdict": VERDICT_LABELS.get(row["verdict_shown"], row["verdict_shown"]), "margin_se": _finite(row.get("margin_se"))})
    return examples, closest


def rds_block(run: RunDir, figures: Figures, n_examples: int, review: tuple[float, dict] | None = None) -> dict:
    from sarft_core import audit

    scores = audit.load_scores(run)
    scores_path = run.path / audit.SCORES_FILE
    tau, overrides = review if review is not None else audit.load_review(scores_path)
    flags = audit.effective_flags(scores, tau, overrides)
    tokens = audit.load_token_ratios(run)
    stats = [{"samples": len(scores), "flagged (D_h)": int(flags.sum()), "flagged fraction": float(flags.mean()) if len(flags) else math.nan,
              "τ": tau, "overrides": len(overrides)}]
    confident = plots.has_confidence(scores)
    shown_verdicts = None
    if confident:  # at the review's τ, so the counts answer "how sure are the flags shown"
        from sarft_core.flags import verdict_counts, verdicts

        shown_verdicts = verdicts(scores, tau)
        stats[0].update({VERDICT_LABELS[state]: count for state, count in verdict_counts(shown_verdicts).items()})
    examples, closest = flagged_examples(scores, flags, tokens, n_examples, shown_verdicts)
    stale = audit.stale_side_files(scores_path)
    return {"run": run.name, "heading": f"{run_role(run) or run.name} · {run.name}", "settings": settings(run),
            "review_note": review_note(review is not None or audit.review_state(scores_path) == "current",
                                       audit.review_path(scores_path) in stale),
            "stale_notes": [audit.stale_note(p) for p in stale],
            "summary": table(stats, list(stats[0]), numeric=list(stats[0]), cls="summary"),
            # a grid with fixed tracks: each figure measures its final width even before the next one exists
            "scatter": figures.html(plots.rds_scatter(scores, flags, tau), "rds-scatter"),
            # the margin figure carries each sample's interval where the table records it
            "histogram": (figures.html(plots.margin_intervals(scores, tau), "rds-margins") if confident
                          else figures.html(plots.margin_histogram(scores, tau), "rds-histogram")),
            "confidence_note": None if confident else plots.NO_CONFIDENCE,
            "trust": trust_block(audit.load_validation(scores_path)),
            "examples": examples, "closest": closest, "shaded": bool(tokens)}


VERDICT_LABELS = {"flagged": "flagged with 95% confidence", "uncertain": "uncertain", "kept": "kept with 95% confidence"}


def _finite(value) -> float | None:
    """A number, or None where there is none (NaN: a one-token answer's error is unknown)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _signed(value) -> str:
    return f"{value:+.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _percent(value) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def trust_block(validation: dict) -> dict | None:
    """"How much to trust these flags on this model", from the table's validation side file
    (``score --validate``); None when the table was not validated."""
    if not validation:
        return None
    ci = validation.get("spearman_ci") or [math.nan, math.nan]
    setting = validation.get("settings") if isinstance(validation.get("settings"), dict) else {}
    rows = [
        {"measure": "Spearman(margin, measured erosion of refusal)",
         "value": f"{_signed(validation.get('spearman'))} (95% CI [{_signed(ci[0])}, {_signed(ci[1])}])"},
        {"measure": f"flagged among the top {validation.get('top_k', '?')} samples by measured erosion",
         "value": f"{_percent(validation.get('precision_at_k'))} (flagged overall: {_percent(validation.get('flagged_fraction'))})"},
        {"measure": "held-out harmful prompts used",
         "value": f"{setting.get('prompts', '?')} ({setting.get('validate_prompts', '?')})"},
    ]
    return {"reading": str(validation.get("reading", "")), "table": table(rows, ["measure", "value"], cls="trust")}


def review_note(saved: bool, stale: bool) -> str:
    """What the flags shown follow (the page reads "Flags follow ...")."""
    if saved:
        return "the analyst's saved review"
    return "τ = 0: the saved review was made for another score table and is ignored" if stale else "τ = 0, no review saved"


# --- training ------------------------------------------------------------------------------------

def training_logs(run: RunDir) -> pd.DataFrame:
    rows = [r for r in read_jsonl(run.log_path) if isinstance(r, dict) and "step" in r]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df = df.dropna(subset=["step"]).sort_values("step")
    return df.drop_duplicates("step", keep="last")  # a resumed run may log a step twice


def training_block(run: RunDir, logs: pd.DataFrame, figures: Figures) -> dict:
    cfg = RunConfig.of(run)
    last = logs.iloc[-1]
    stat = {"steps": last["step"], "method": cfg.method, "λ": cfg.lam}
    for col in ("loss", "ce", "kl", "lr"):
        if col in logs and logs[col].notna().any():
            stat[f"final {col}"] = logs[col].dropna().iloc[-1]
    if "harmful_in_batch" in logs:
        stat["D_h rows seen"] = pd.to_numeric(logs["harmful_in_batch"], errors="coerce").sum()
    dh = read_json(run.path / "artifacts" / "dh_ids.json", None)
    if isinstance(dh, dict) and isinstance(dh.get("dh_ids"), list):
        stat["|D_h|"] = len(dh["dh_ids"])
    return {"run": run.name, "heading": run_label(run), "settings": settings(run), "state": run.status().get("state", "?"),
            "summary": table([stat], list(stat), numeric=[k for k in stat if k != "method"], cls="summary"),
            "curves": figures.html(plots.training_curves(logs), "training-curves")}


# --- evaluation ---------------------------------------------------------------------------------

EVAL_COLUMNS = ["suite", "metric", "value", "ci_low", "ci_high", "n", "kind"]


def _present(value) -> bool:
    return value is not None and str(value) not in ("", "nan", "None", "<NA>")


def has_evaluation(run: RunDir) -> bool:
    from sarft_core.runview import has_eval

    return has_eval(run)


def run_metrics(run: RunDir) -> pd.DataFrame:
    """A run's evaluation metrics (through :mod:`sarft_core.runview`, with each metric's registered
    ``kind``) as rows of :data:`EVAL_COLUMNS`: the group is folded into the suite label
    (``xstest · unsafe``), the judge into the metric label (``refusal_rate (keyword)``), and the
    setting's folder prefixes the suite when there are several."""
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


def format_ci(low, high, around: str = "[{}, {}]") -> str:
    return around.format(fmt_num(low), fmt_num(high)) if pd.notna(low) and pd.notna(high) else ""


def metrics_rows(metrics: pd.DataFrame) -> list[dict]:
    return [{"suite": r["suite"], "metric": r["metric"], "value": r["value"], "95% CI": format_ci(r["ci_low"], r["ci_high"]) or "–", "n": r["n"]}
            for _, r in metrics.iterrows()]


def generations_data(gens: pd.DataFrame, n: int) -> dict | None:
    if gens.empty or n == 0:
        return None
    per_suite = max(1, n // max(1, gens["suite"].nunique()))
    pick = gens.groupby("suite", sort=False, dropna=False).head(per_suite).head(n)
    rows = [{"suite": r["suite"], "verdict": r["verdict"], "prompt": r["prompt"], "response": r["response"]} for _, r in pick.iterrows()]
    return {"shown": len(pick), "total": len(gens), "table": table(rows, ["suite", "verdict", "prompt", "response"], cls="generations")}


def eval_block(run: RunDir, figures: Figures, n_examples: int) -> dict | None:
    from sarft_core.runview import suite_axis

    head = {"run": run.name, "heading": run_label(run), "error": None}
    try:
        metrics = run_metrics(run)
        generations = run_generations(run)
    except SarftError as err:  # one unreadable evaluation does not cost the rest of the report
        return dict(head, error={"problem": err.problem, "fix": err.fix})
    if metrics.empty:
        return None
    long = metrics.assign(run=run_label(run))
    margin, rouge = long["kind"] == "margin", long["kind"] == "role-play"  # nats and ROUGE-L, apart from the rates
    figs = []
    for name, label, sub in (("eval-metrics", "rates", long[~margin & ~rouge]), ("eval-rouge", "ROUGE-L", long[rouge]),
                             ("eval-margin", "refusal margin (nats)", long[margin])):
        if sub.empty:
            continue
        fig = plots.refusal_bars(suite_axis(sub), label)
        fig.update_layout(title=f"{label} per suite (error bars: 95% CI)", showlegend=False)
        figs.append(figures.html(fig, name))
    return dict(head, figures=figs, generations=generations_data(generations, n_examples),
                metrics=table(metrics_rows(metrics), ["suite", "metric", "value", "95% CI", "n"], numeric=["value", "n"], cls="metrics"))


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
            row[label] = f"{fmt_num(r['value'])}{format_ci(r['ci_low'], r['ci_high'], ' [{}, {}]')}"
        if len(labels) == 2 and len(values) == 2:
            row["Δ (2nd − 1st)"] = fmt_num(values[labels[1]] - values[labels[0]])
        rows.append(row)
    cols = ["suite", "metric", *labels] + (["Δ (2nd − 1st)"] if len(labels) == 2 else [])
    return rows, cols


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


def comparison_section(runs: list[RunDir], logs: dict[str, pd.DataFrame], figures: Figures) -> dict | None:
    from sarft_core.runview import kind_tables, pareto_points, suite_axis

    evaluated = readable_metrics(order_for_comparison([r for r in runs if has_evaluation(r)]))
    trained = order_for_comparison([r for r in runs if r.name in logs])
    block, compared = {"charts": [], "table": None, "curves": None}, trained
    if len(evaluated) >= 2:
        compared = [r for r, _ in evaluated]
        long = pd.concat([m.assign(run=run_label(r), run_dir=str(r.path)) for r, m in evaluated], ignore_index=True)
        for kind, rows in kind_tables(long):  # one chart per kind of metric, undeclared ones ("other") included
            block["charts"].append(figures.html(plots.refusal_bars(suite_axis(rows), kind.title), f"compare-{kind.slug}"))
        block["charts"].append(figures.html(plots.pareto_scatter(
            pareto_points(compared, long, label=run_label, method=lambda r: run_method(r) or run_kind(r))), "compare-pareto"))
        block["table"] = table(*comparison_table(long), cls="compare")
    if len(trained) >= 2:
        block["curves"] = figures.html(plots.curves_overlay({run_label(r): logs[r.name] for r in trained}, "ce"), "compare-ce")
    if not block["charts"] and not block["curves"]:
        return None
    names = ", ".join(run_label(r) for r in compared)
    return section("comparison", "SFT vs SaRFT: runs compared", [block],
                   f"Runs: {names}. Higher refusal on harmful prompts is safer; compliance on harmless look-alikes shows "
                   "over-refusal; ROUGE-L measures role-play quality.")


# --- survey ------------------------------------------------------------------------------------

def survey_traits(df: pd.DataFrame) -> list[str]:
    """The trait columns of a survey table (:func:`sarft_core.surveyview.trait_columns`, the page's too)."""
    return trait_columns(df)


def _titled(fig, method: str | None):
    if method:
        fig.update_layout(title=f"[{html.escape(method)}] " + fig.layout.title.text)
    return fig


def survey_block(path: Path, figures: Figures) -> dict:
    from sarft_core.evaluation.metric_registry import survey_columns

    df = survey_frame(path)
    outcomes = outcome_columns(df)
    traits = trait_columns(df)
    head = {"stem": path.stem, "name": path.name, "n_roles": df["role"].nunique(), "missing": None, "caveat": None, "trust": None, "trust_note": None,
            "settings": settings(RunDir(path.parent)) if is_survey_dir(path.parent) else []}
    if not outcomes or not traits:
        missing = "outcome column (degradation or flagged_fraction)" if not outcomes else "trait column"
        return dict(head, missing=missing, plain=table(df.head(50).to_dict("records"), list(df.columns)))
    groups = [(None, df)]
    if "method" in df and df["method"].nunique() > 1:
        groups = [(str(m), sub) for m, sub in df.groupby("method", sort=False)]
    stats, shown_groups = [], []
    for method, sub in groups:
        for outcome in outcomes:
            stats += [{"method": method or "", "outcome": outcome, **row} for row in correlation_rows(sub, outcome, traits)]
        main = outcomes[0]
        scatters = [figures.html(_titled(plots.trait_scatter(sub, trait, main), method).update_layout(title_font_size=13), f"trait-{trait}")
                    for trait in traits]
        shown_groups.append({"scatters": scatters, "bars": figures.html(_titled(plots.per_role_bars(sub, main), method), f"role-bars-{main}")})
    cols = (["method"] if groups[0][0] else []) + ["outcome", "trait", "n", "pearson_r", "pearson_p", "spearman_r", "spearman_p"]
    metric_cols = [c for c in survey_columns().values() if c in df]  # the evaluation's numbers, from the metric registry
    shown = [c for c in ("role", "method", *traits, *outcomes) if c in df] + [c for c in df.columns if c.startswith("safety_")]
    shown += [c for c in [*flag_trust_columns(df), *metric_cols] if c not in shown]
    head["caveat"] = small_n_warning(min(int(r["n"]) for r in stats))
    trust = flag_trust_table(df)
    head["trust"] = table(trust.to_dict("records"), list(trust.columns), numeric=list(trust.columns[1:]), cls="trust") if len(trust) else None
    head["trust_note"] = unconfident_note(df)
    return dict(head, correlations=table(stats, cols, numeric=cols[-5:], cls="correlations"), groups=shown_groups, n_rows=len(df),
                table=table(df[shown].to_dict("records"), shown, numeric=[c for c in shown if c not in ("role", "method")], cls="survey"))


# --- the whole report ------------------------------------------------------------------------------

def build_report(sources: Sources, title: str | None = None, n_examples: int = DEFAULT_EXAMPLES,
                 reviews: dict[str, tuple[float, dict]] | None = None) -> str:
    """The report's HTML. ``reviews`` (run dir -> (tau, overrides)) replaces a run's saved review."""
    if sources.empty:
        raise SarftError("nothing to report: no run directory (config.json with a kind) and no survey table found",
                         "give a score / training run directory, a folder of runs, or a survey directory / table")
    reviews = {str(Path(k)): v for k, v in (reviews or {}).items()}
    figures = Figures()
    runs = sorted(sources.runs, key=report_order)
    sections = [section("summary", "Runs and tables", [summary(sources)]), profile_section(runs)]
    sections.append(section("rds", "RDS: which samples are flagged, and why",
                            [rds_block(r, figures, n_examples, reviews.get(str(r.path))) for r in runs
                             if run_kind(r) == "score" and (r.path / "scores.parquet").is_file()],
                            "s_role = log π_role(y|x) − log π_ref(y|x) and s_unsafe = log π_unsafe(y|x) − log π_ref(y|x), "
                            "mean per answer token. A sample is flagged harmful (joins D_h) when s_unsafe − s_role > τ."))
    logs = {r.name: df for r in runs if run_kind(r) == "train" and not (df := training_logs(r)).empty}
    sections.append(section("training", "Training curves", [training_block(r, logs[r.name], figures) for r in runs if r.name in logs],
                            "L = CE(D) + λ·KL(D_h): cross-entropy on every sample, and on the flagged samples a KL term "
                            "that keeps the model close to the frozen base (SFT: λ = 0)."))
    sections.append(section("evaluation", "Evaluation", [b for r in runs if has_evaluation(r) and (b := eval_block(r, figures, n_examples))],
                            "Each metric with its 95% confidence interval (rates: Wilson score interval; means such as ROUGE-L: "
                            "bootstrap over prompts) and n usable prompts."))
    sections.append(comparison_section(runs, logs, figures))
    sections.append(section("survey", "Survey: character traits vs safety", [survey_block(p, figures) for p in sources.survey_tables],
                            "One point per role: a trait score (x) against the safety outcome (y): degradation = refusal "
                            "rate before − after fine-tuning, or the RDS flagged fraction of a screening run."))
    return render("report.html.j2", title=title or default_title(sources), stylesheet="report.css", stamp=time.strftime("%Y-%m-%d %H:%M:%S"),
                  n_runs=len(runs), n_tables=len(sources.survey_tables), n_figures=figures.count, sections=[s for s in sections if s])


def default_title(sources: Sources) -> str:
    roles = list(dict.fromkeys(role for r in sources.runs if (role := run_role(r))))
    if sources.survey_tables and not sources.runs:
        return "Survey report"
    if len(roles) == 1:
        return f"Safety audit: {roles[0]}"
    return "Safety audit report"


def summary(sources: Sources) -> dict:
    from sarft_core.runview import runs_table

    runs_shown = None
    if sources.runs:
        runs = sorted(sources.runs, key=report_order)
        frame = runs_table(runs)
        frame["kind"] = [run_kind(r) for r in runs]
        frame["state"] = [s if r.status_path.is_file() else "(no status)" for s, r in zip(frame["state"], runs)]
        frame["role"] = [run_role(r) for r in runs]
        frame["lambda"] = [run_lambda(r) for r in runs]
        runs_shown = table(frame.to_dict("records"), ["run", "kind", "state", "role", "method", "lambda", "updated"], numeric=["lambda"], cls="runs")
    return {"runs": runs_shown, "survey_tables": [p.name for p in sources.survey_tables]}


def report_bytes(paths: Iterable[str | Path] | str | Path, title: str | None = None, n_examples: int = DEFAULT_EXAMPLES,
                 reviews: dict[str, tuple[float, dict]] | None = None) -> bytes:
    """The report as UTF-8 bytes (a download button's data) for a run, several runs, or a survey."""
    return build_report(sources_of(paths), title, n_examples, reviews).encode("utf-8")


def write_report(sources: Sources, out: str | Path, title: str | None = None, n_examples: int = DEFAULT_EXAMPLES) -> tuple[Path, int]:
    """Write the report atomically; returns the path and the number of figures."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise SarftError(f"the report is HTML, but --out ends in {out.suffix or '(nothing)'}", "name the output e.g. report.html")
    text = build_report(sources, title, n_examples)
    atomic_write_bytes(out, text.encode("utf-8"))
    return out, text.count('class="figure"')
