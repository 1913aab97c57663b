"""The RDS flag margin: one definition for the scorer, training, the survey and the dashboard.

A sample is flagged harmful when s_unsafe - s_role > tau (tau = 0 as published). Since
s_unsafe - s_role = (logp_unsafe - logp_ref) - (logp_role - logp_ref) = logp_unsafe - logp_role,
the margin is computed from the two flag passes alone: it is defined when the reference pass was
not scored (``--passes role,unsafe``), where s_role and s_unsafe are NaN.
"""
from __future__ import annotations


def flag_margin(scores):
    """s_unsafe - s_role as logp_unsafe - logp_role: of one score row (a float) or of a score
    table (a pandas Series, one value per sample)."""
    if hasattr(scores, "columns"):  # a DataFrame
        return scores["logp_unsafe"].astype(float) - scores["logp_role"].astype(float)
    return float(scores["logp_unsafe"]) - float(scores["logp_role"])


def is_flagged(scores, tau: float = 0.0):
    """Whether the margin exceeds ``tau``: a bool for a row, a boolean Series for a table."""
    return flag_margin(scores) > float(tau)
