"""The RDS flag margin: one definition for the scorer, training, the survey and the dashboard.

A sample is flagged harmful when s_unsafe - s_role > tau (tau = 0 as published). Since
s_unsafe - s_role = (logp_unsafe - logp_ref) - (logp_role - logp_ref) = logp_unsafe - logp_role,
the margin is computed from the two flag passes alone: it is defined when the reference pass was
not scored (``--passes role,unsafe``), where s_role and s_unsafe are NaN.
"""
from __future__ import annotations

import math


def flag_margin(scores):
    """s_unsafe - s_role as logp_unsafe - logp_role: of one score row (a float) or of a score
    table (a pandas Series, one value per sample)."""
    if hasattr(scores, "columns"):  # a DataFrame
        return scores["logp_unsafe"].astype(float) - scores["logp_role"].astype(float)
    return float(scores["logp_unsafe"]) - float(scores["logp_role"])


def is_flagged(scores, tau: float = 0.0):
    """Whether the margin exceeds ``tau``: a bool for a row, a boolean Series for a table."""
    return flag_margin(scores) > float(tau)


# ---- how sure a flag is ---------------------------------------------------------------------
#
# A flag rests on one wording of the unsafe instruction. Reworded (sarft_core.data.profiles has
# five wordings of ours), the margin of a quarter of the samples changes sign on the aligned
# model, so each flag's error (margin_se) is by default the spread of its margin over the published
# wording and three of ours (wording_spread). Measured against a fourth wording held out, 98% of
# the verdicts this makes confident keep their flag, against 88% for the alternative, a circular
# block bootstrap over the answer's per-token log-ratios (margin_se below: free, used when no
# rewordings are scored). docs/flags.md has the measurement (bench/bench_flag_uncertainty.py).

VERDICTS = ("flagged", "uncertain", "kept")
BOOTSTRAP_REPLICATES = 400
DEFAULT_CONFIDENCE = 0.95


def block_length(n_tokens: int) -> int:
    """The bootstrap's block length for an answer of ``n_tokens`` tokens: round(n^(1/3)), at least 1."""
    return max(1, round(n_tokens ** (1.0 / 3.0)))


def margin_se(token_ratios, normalise: str = "mean", replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> float:
    """Standard error of one sample's margin from its per-token log-ratios (unsafe - role), by a
    circular block bootstrap. NaN for fewer than two tokens (nothing to resample: the verdict is
    then ``uncertain``). Deterministic: the same ratios give the same error."""
    import numpy as np

    d = np.asarray(token_ratios, dtype=np.float64)
    n = d.size
    if n < 2:
        return math.nan
    length = block_length(n)
    blocks = -(-n // length)  # ceil
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(replicates, blocks))
    index = (starts[:, :, None] + np.arange(length)) % n
    means = d[index.reshape(replicates, -1)[:, :n]].mean(axis=1)
    se = float(means.std(ddof=1))
    return se * n if normalise == "sum" else se


def wording_spread(margins) -> float:
    """The standard deviation of one sample's margins under several wordings of the unsafe
    instruction (the published one first): how far the margin moves when the instruction is merely
    reworded. NaN for fewer than two wordings."""
    import numpy as np

    values = np.asarray(margins, dtype=np.float64)
    return float(values.std(ddof=1)) if values.size >= 2 else math.nan


def z_value(confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The two-sided normal quantile of ``confidence`` (1.96 for 0.95)."""
    from statistics import NormalDist

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def verdict(margin: float, se: float, tau: float = 0.0, confidence: float = DEFAULT_CONFIDENCE) -> str:
    """``flagged`` when the margin exceeds tau by more than z standard errors, ``kept`` when it
    falls short of tau by more than that, else ``uncertain`` (an unknown error is uncertain)."""
    if not (math.isfinite(margin) and math.isfinite(se)):
        return "uncertain"
    reach = z_value(confidence) * se
    if margin - tau > reach:
        return "flagged"
    if margin - tau < -reach:
        return "kept"
    return "uncertain"


def verdicts(scores, tau: float = 0.0, confidence: float = DEFAULT_CONFIDENCE):
    """The verdict of every row of a score table (a Series of ``VERDICTS``); a table scored before
    errors were recorded (no ``margin_se`` column) is ``uncertain`` throughout, never confident."""
    import pandas as pd

    margin = flag_margin(scores)
    se = scores["margin_se"].astype(float) if "margin_se" in scores.columns else pd.Series(math.nan, index=scores.index)
    return pd.Series([verdict(m, s, tau, confidence) for m, s in zip(margin, se)], index=scores.index, dtype=object)


def verdict_counts(verdict_values) -> dict[str, int]:
    """{state: count} over ``VERDICTS``, every state present (0 where none)."""
    values = list(verdict_values)
    return {state: sum(1 for v in values if v == state) for state in VERDICTS}
