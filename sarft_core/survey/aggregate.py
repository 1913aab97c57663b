"""Joining the finished roles with their traits: the survey table and its correlations."""
from __future__ import annotations


import math
from sarft_core.survey.config import FULL, SCREEN, Survey
from sarft_core.survey.steps import metric_columns



# how sure each role's flags are: measurements of the flags, never traits of the character
CONFIDENCE_COLUMNS = ("confident_flagged_fraction", "uncertain_fraction")
VALIDATION_COLUMNS = ("validation_spearman", "validation_spearman_ci_low", "validation_spearman_ci_high")
FLAG_TRUST_COLUMNS = CONFIDENCE_COLUMNS + VALIDATION_COLUMNS


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


def flag_trust(score: dict) -> dict:
    """A role's survey columns on how sure its flags are: the shares of confident flags and of
    uncertain ones (NaN for a role scored before verdicts were recorded), and, where the role was
    validated, the Spearman of its margins with measured erosion and that correlation's 95% CI."""
    counts = _obj(score.get("verdicts"))
    n = sum(v for v in counts.values() if isinstance(v, (int, float)))
    share = (lambda k: counts.get(k, 0) / n) if n else (lambda k: math.nan)
    out = {"confident_flagged_fraction": share("flagged"), "uncertain_fraction": share("uncertain")}
    validation = _obj(score.get("validation"))
    if validation:
        out.update({f"validation_{k}": validation.get(k, math.nan) for k in ("spearman", "spearman_ci_low", "spearman_ci_high")})
    return out


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
                    mean_margin=sc.get("mean_margin", math.nan), **flag_trust(sc), status=res.get("status"), seconds=res.get("seconds"))
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
