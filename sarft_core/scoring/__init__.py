"""RDS: score every training sample of a role under the ref / role / unsafe system prompts.

``score_role`` returns one row per sample with exactly the contract columns
(id, role, input, output, logp_ref, logp_role, logp_unsafe, s_role, s_unsafe, harmful, n_tokens)
and keeps the per-token log-probabilities, so the per-token ratio (unsafe - role) of each answer
is available for display. Finished samples are cached on disk as they complete: a rerun with the
same model, prompts and data returns at once, and an interrupted run resumes where it stopped.

Modules: ``options`` (ScoreOptions, ScoreResult, the plans), ``cache`` (the on-disk cache),
``run`` (``score_role``), ``engine`` / ``packed`` (the forward passes), ``machine`` (the fast
mode's per-machine decision), ``published`` (the re-implemented published scorer). This package
only re-exports.
"""
from __future__ import annotations

from sarft_core.scoring.engine import Cancelled
from sarft_core.scoring.options import (
    BF16_RECHECK_BAND, EXACT_PLAN, FLAG_PASSES, PACKED_BF16_RECHECK_BAND, PASSES, REF_SYSTEM_PROMPT, SCORE_COLUMNS,
    SCREEN_PROBE_SAMPLES, VLLM_PLAN, FastPlan, ScoreOptions, ScoreResult, batch_tokens, fast_plan, machine_plan, scoring_plan,
)
from sarft_core.scoring.run import score_role

__all__ = [
    "BF16_RECHECK_BAND", "EXACT_PLAN", "FLAG_PASSES", "PACKED_BF16_RECHECK_BAND", "PASSES", "REF_SYSTEM_PROMPT", "SCORE_COLUMNS",
    "SCREEN_PROBE_SAMPLES", "VLLM_PLAN", "Cancelled", "FastPlan", "ScoreOptions", "ScoreResult", "batch_tokens",
    "fast_plan", "machine_plan", "score_role", "scoring_plan",
]
