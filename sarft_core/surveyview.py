"""A survey table as the Survey page and the report read it: which tables there are, which columns
are traits and which are outcomes, the correlations with what their number of roles allows, and
what a full survey will cost before it starts.

One definition of each, so the page never offers a column the report excludes (``seconds`` once
showed Pearson r 1.000 on the page, the only "significant" row, while the report left it out).
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pandas as pd

from sarft_core.report_sources import OUTCOMES, discover
from sarft_core.stats import MIN_PAIRS_FOR_P
from sarft_core.store import read_table

KNOWN_TRAITS = ("malevolence", "aggression", "deceptiveness", "benevolence")
# numeric survey columns that are measurements, not traits (besides the metric registry's survey columns)
NON_TRAIT = re.compile(r"^(safety_|n_|refusal|rouge|roleplay|role_play|seconds|time|lambda|lam$|seed|steps?$|samples|flagged|degradation"
                       r"|mean_margin|margin|score|status)")
MIN_ROLES_FOR_P = MIN_PAIRS_FOR_P  # fewer roles: r only, and a warning (the page, the report, the scatter's title)
P_COLUMNS = ("pearson_p", "spearman_p")


def survey_frame(path: Path) -> pd.DataFrame:
    """The table with its outcomes numeric, and ``degradation`` derived when only before / after are there."""
    df = read_table(path)
    for col in OUTCOMES:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "degradation" not in df and {"safety_before", "safety_after"} <= set(df.columns):
        df["degradation"] = pd.to_numeric(df["safety_before"], errors="coerce") - pd.to_numeric(df["safety_after"], errors="coerce")
    return df


def trait_columns(df: pd.DataFrame) -> list[str]:
    """The trait columns of a survey table: numeric columns that are neither an outcome, nor a
    measurement (time, samples, margins ...), nor a metric the registry says a survey records."""
    from sarft_core.evaluation.metric_registry import survey_columns
    from sarft_core.survey.aggregate import FLAG_TRUST_COLUMNS

    measured = set(survey_columns().values()) | set(FLAG_TRUST_COLUMNS)  # how sure the flags are is no trait
    numeric = list(df.select_dtypes("number").columns)
    known = [t for t in KNOWN_TRAITS if t in numeric]
    rest = [c for c in numeric if c not in known and c not in OUTCOMES and c not in measured and not NON_TRAIT.match(c.lower())]
    return known + rest


def flag_trust_columns(df: pd.DataFrame) -> list[str]:
    """The columns of a survey table that say how sure each role's flags are (confident and
    uncertain shares, the validation's Spearman and its interval), in the survey's order."""
    from sarft_core.survey.aggregate import FLAG_TRUST_COLUMNS

    return [c for c in FLAG_TRUST_COLUMNS if c in df]


def flag_trust_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per role: its flagged fraction beside how sure those flags are (empty without such columns)."""
    trust = flag_trust_columns(df)
    if not trust or "role" not in df:
        return pd.DataFrame()
    shown = ["role", *[c for c in ("flagged_fraction",) if c in df], *trust]
    return df.drop_duplicates("role")[shown].reset_index(drop=True)


def unconfident_note(df: pd.DataFrame) -> str | None:
    """What to say when some roles were scored before verdicts were recorded (their shares are
    empty: unknown, not uncertain)."""
    if "confident_flagged_fraction" not in df:
        return None
    roles = df.drop_duplicates("role") if "role" in df else df
    n = int(pd.to_numeric(roles["confident_flagged_fraction"], errors="coerce").isna().sum())
    if not n:
        return None
    return (f"{n} role{'s were' if n != 1 else ' was'} scored before confidences were recorded, so how sure "
            f"{'their' if n != 1 else 'its'} flags are is unknown: delete {'their' if n != 1 else 'its'} roles/<role>.json "
            "and rerun the survey to rescore (the scores come from the cache)")


def outcome_columns(df: pd.DataFrame) -> list[str]:
    """The outcomes a table can be correlated with (two values at least)."""
    return [o for o in OUTCOMES if o in df and pd.to_numeric(df[o], errors="coerce").notna().sum() >= 2]


def correlation_rows(df: pd.DataFrame, outcome: str, traits: list[str]) -> list[dict]:
    """Per trait: n, Pearson r and Spearman rho, with p-values only when n allows (:data:`MIN_ROLES_FOR_P`)."""
    from sarft_core.stats import correlate

    rows = []
    for trait in traits:
        stats = correlate(df[trait], df[outcome], n_boot=0)
        keep = ("n", "pearson_r", "pearson_p", "spearman_r", "spearman_p")
        row = {"trait": trait, **{k: stats[k] for k in keep}}
        if row["n"] < MIN_ROLES_FOR_P:
            row.update({p: math.nan for p in P_COLUMNS})
        rows.append(row)
    return rows


def small_n_warning(n: int) -> str | None:
    """What to say over a correlation table of ``n`` roles (None when n allows p-values)."""
    if n >= MIN_ROLES_FOR_P:
        return None
    return (f"Only {n} role{'s' if n != 1 else ''}: too few for a correlation to be evidence of anything, so no p-values are shown. "
            f"Read r as a description of these roles; survey {MIN_ROLES_FOR_P} roles or more before reading it as a finding.")


def survey_tables_under(root: Path) -> list[Path]:
    """The survey tables under ``root`` (a survey's ``table.csv``, loose tables with a role column;
    not its correlations, logs or score files), newest first."""
    if not root.is_dir():
        return []
    return sorted(discover(root).survey_tables, key=lambda p: p.stat().st_mtime, reverse=True)


def table_label(path: Path, root: Path) -> str:
    """``folder/table.csv · date``: a survey writes every table as table.csv, the folder tells them apart."""
    path = Path(path)
    try:
        shown = path.relative_to(root).as_posix()
    except ValueError:
        shown = f"{path.parent.name}/{path.name}"
    return f"{shown} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(path.stat().st_mtime))}"


def full_survey_cost(n_roles: int, methods: list[str], samples_per_role: int | None) -> str:
    """What a full survey runs, said before it starts: it trains and evaluates every role."""
    n_train = n_roles * len(methods)
    per_role = f"up to {samples_per_role} samples" if samples_per_role else "all its samples"
    return (f"A full survey of {n_roles} role{'s' if n_roles != 1 else ''} runs {n_train} training run{'s' if n_train != 1 else ''} "
            f"({', '.join(methods)} per role, each on {per_role}) and {n_train + 1} evaluations (one of the base model). "
            "Measured on 2 CPU cores with the embedded model: 10 roles × 16 samples, LoRA, took 10.5 min; time grows with "
            "roles × samples, and RoleBench roles have hundreds of samples each. The screening survey (RDS only) costs one scoring pass per role.")
