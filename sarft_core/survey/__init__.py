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

Resuming: roles with a result file made from the same content (profile text, sample rows,
settings, model fingerprint: its ``key``) are skipped, so a crash loses at most the role in
progress, and inside a role the training runs resume from their own checkpoints (a training run
of other content is set aside as ``train-<m>.stale-<time>``). A role another process holds is
waited for, so every process that ends reports the same finished roles. Several processes (local
workers, SLURM jobs) can work on one survey at once: each role is claimed with a file lock.

Steps are plain callables (:class:`Steps`), so training and evaluation can be swapped for other
implementations; the defaults call ``python -m sarft_core train`` / ``eval`` in subprocesses.

Modules: ``config`` (settings, the directory, role locks), ``steps`` (one role's steps), ``runner``
(the pending roles, local workers, SLURM jobs), ``aggregate`` (the table and its correlations);
this package only re-exports.
"""
from __future__ import annotations

from sarft_core.survey.config import SCREEN, FULL, SurveyConfig, legacy_role_slug, role_slug, Survey, open_survey, RoleLock
from sarft_core.data.samples import load_role_samples
from sarft_core.survey.steps import ModelHolder, RoleContext, score_step, StepFailed, run_cli, train_step, find_metrics, metric_columns, eval_step, base_eval_step, Steps, run_role
from sarft_core.survey.runner import role_line, run_pending, run_workers, submit_slurm
from sarft_core.survey.aggregate import survey_traits, aggregate, write_aggregate

__all__ = ["SCREEN", "FULL", "SurveyConfig", "legacy_role_slug", "role_slug", "Survey", "open_survey", "RoleLock", "ModelHolder", "RoleContext", "load_role_samples", "score_step", "StepFailed", "run_cli", "train_step", "find_metrics", "metric_columns", "eval_step", "base_eval_step", "Steps", "run_role", "role_line", "run_pending", "run_workers", "submit_slurm", "survey_traits", "aggregate", "write_aggregate"]
