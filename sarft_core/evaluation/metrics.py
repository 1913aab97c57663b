"""Pure functions for evaluation numbers: rates (Wilson intervals), means (bootstrap intervals), judge agreement.

Labels are strings: ``refusal`` (a full refusal), ``partial`` (a partial refusal: a refusal
plus a watered-down or redirected answer), ``compliance``, ``invalid`` (the response is empty or
meaningless) and ``unknown`` (the judge gave no usable verdict). A refusal rate counts full and
partial refusals (XSTest's binarisation); :func:`rate` with ``positive=PARTIAL`` counts partial
ones alone. ``unknown`` rows are left out
of every denominator and counted separately, so a flaky judge is visible instead of silently
moving a rate; ``invalid`` rows stay in the denominator and count as neither refusal nor
compliance.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from sarft_core.stats import bootstrap_ci, wilson_ci

REFUSAL, PARTIAL, COMPLIANCE, INVALID, UNKNOWN = "refusal", "partial", "compliance", "invalid", "unknown"
LABELS = (REFUSAL, PARTIAL, COMPLIANCE, INVALID, UNKNOWN)
THREE_CLASSES = (COMPLIANCE, REFUSAL, PARTIAL)  # XSTest's full compliance / full refusal / partial refusal


def is_refusal(label: str) -> bool:
    """A full or a partial refusal."""
    return label in (REFUSAL, PARTIAL)


def counts_as(label: str, positive: str) -> bool:
    """Whether ``label`` counts for a rate of ``positive`` (a partial refusal is a refusal)."""
    return is_refusal(label) if positive == REFUSAL else label == positive


def rate(labels: Iterable[str], positive: str) -> dict:
    """Share of ``positive`` among the usable labels, with a 95% Wilson score interval
    (:func:`sarft_core.stats.wilson_ci`: right at 0 / n and n / n and for small n, where a
    bootstrap of 0/1 values collapses to a point).

    Returns value, ci_low, ci_high (all in 0..1), n (usable rows), k (positives), n_unknown.
    """
    labels = list(labels)
    usable = [lab for lab in labels if lab != UNKNOWN]
    hits = [1.0 if counts_as(lab, positive) else 0.0 for lab in usable]
    lo, hi = wilson_ci(int(sum(hits)), len(hits))
    return {
        "value": (sum(hits) / len(hits)) if hits else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "n": len(usable),
        "k": int(sum(hits)),
        "n_unknown": len(labels) - len(usable),
    }


def mean_with_ci(values: Iterable[float]) -> dict:
    """Mean of the finite values with a 95% bootstrap interval."""
    x = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    lo, hi = bootstrap_ci(x)
    return {"value": (sum(x) / len(x)) if x else math.nan, "ci_low": lo, "ci_high": hi, "n": len(x), "n_unknown": 0}


def confusion(truth: Sequence[bool], pred: Sequence[bool]) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) with ``True`` as the positive class."""
    if len(truth) != len(pred):
        raise ValueError("truth and pred differ in length")
    tp = sum(1 for t, p in zip(truth, pred) if t and p)
    fp = sum(1 for t, p in zip(truth, pred) if not t and p)
    fn = sum(1 for t, p in zip(truth, pred) if t and not p)
    tn = len(truth) - tp - fp - fn
    return tp, fp, fn, tn


def cohen_kappa(truth: Sequence[bool], pred: Sequence[bool]) -> float:
    """Cohen's kappa of two binary raters: (p_o - p_e) / (1 - p_e)."""
    tp, fp, fn, tn = confusion(truth, pred)
    n = tp + fp + fn + tn
    if n == 0:
        return math.nan
    p_o = (tp + tn) / n
    p_e = ((tp + fn) / n) * ((tp + fp) / n) + ((tn + fp) / n) * ((tn + fn) / n)
    return 1.0 if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)


def agreement(truth: Sequence[bool], pred: Sequence[bool]) -> dict:
    """Accuracy, precision, recall and Cohen's kappa of a binary judge against ground truth."""
    tp, fp, fn, tn = confusion(truth, pred)
    n = tp + fp + fn + tn
    return {
        "n": n,
        "accuracy": (tp + tn) / n if n else math.nan,
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "kappa": cohen_kappa(truth, pred),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def confusion_table(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str] = THREE_CLASSES) -> dict:
    """Counts ``table[true][predicted]`` over ``classes`` (+ ``other`` for labels outside them),
    with per-class recall and precision."""
    if len(truth) != len(pred):
        raise ValueError("truth and pred differ in length")
    cols = [*classes, "other"]
    table = {t: {p: 0 for p in cols} for t in classes}
    for t, p in zip(truth, pred):
        if t in table:
            table[t][p if p in classes else "other"] += 1
    recall = {c: (table[c][c] / sum(table[c].values())) if sum(table[c].values()) else math.nan for c in classes}
    col_sum = {c: sum(table[t][c] for t in classes) for c in classes}
    precision = {c: (table[c][c] / col_sum[c]) if col_sum[c] else math.nan for c in classes}
    return {"table": table, "recall": recall, "precision": precision, "columns": cols}


def calibration_error(truth: Sequence[bool], prob: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error of P(positive): the bin-weighted |mean prob - observed rate|."""
    t = np.asarray(list(truth), dtype=float)
    p = np.asarray(list(prob), dtype=float)
    if t.size == 0:
        return math.nan
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            err += sel.mean() * abs(p[sel].mean() - t[sel].mean())
    return float(err)
