"""Building the ``hybrid`` judge's heads from human-labelled completions (needs scikit-learn).

The recipe, fixed before it was scored on any held-out file and the same for the shipped head
and for every leave-one-model-out figure:

- inputs: :data:`sarft_core.evaluation.judges.hybrid.INPUT_NAMES`, unscaled (all are in -1..1);
- each distinct response text weighs 1 in total however often it repeats (one model answered
  200 prompts with the same sentence; without this, that sentence alone sets the prior), and the
  two classes weigh the same (``class_weight="balanced"``);
- L2-regularised logistic regression; its strength C is chosen from :data:`C_GRID` by 5-fold
  cross-validation *inside the build data*, folds grouped by response text so a repeated answer
  never sits on both sides of a fold;
- the partial head is fitted on the refusals only (partial vs full), on the rule and anchor
  inputs only (its opening-embedding weights are zero) and without class balancing. This part
  was changed after a first held-out run: with the embedding and balanced classes, a head built
  on one model's refusals (long lectures) called 194 of the other model's 211 one-line full
  refusals partial. Partial refusals are the weak spot of every judge (docs/evaluation.md).
"""
from __future__ import annotations

from typing import Sequence

from sarft_core.errors import SarftError

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
FOLDS = 5


def _sklearn():
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedGroupKFold
    except ImportError:
        raise SarftError("rebuilding the refusal head needs scikit-learn", "pip install -r requirements-dev.txt") from None
    return LogisticRegression, StratifiedGroupKFold


def text_weights(texts: Sequence[str]):
    """1 / (how often each text occurs), so every distinct text weighs 1 in total."""
    import numpy as np

    keys = [" ".join(str(t).split()) for t in texts]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    groups = {k: i for i, k in enumerate(counts)}
    return np.array([1.0 / counts[k] for k in keys]), np.array([groups[k] for k in keys])


def fit_logistic(x, y, texts: Sequence[str], seed: int = 0, balanced: bool = True) -> tuple[list[float], float, dict]:
    """(coef, intercept, info) of the recipe's logistic regression on rows ``x``, labels ``y`` (bool)."""
    import numpy as np

    LogisticRegression, StratifiedGroupKFold = _sklearn()
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise SarftError("the build data has one class only", "build on labelled completions with both refusals and compliance")
    w, groups = text_weights(texts)
    n_folds = int(min(FOLDS, y.sum(), (~y).sum()))
    scores = {}
    for c in C_GRID:
        if n_folds < 2:
            break
        model = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=5000)
        hit = np.zeros(len(y))
        for train, test in StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, y, groups):
            model.fit(x[train], y[train], sample_weight=w[train])
            hit[test] = model.predict(x[test]) == y[test]
        scores[c] = float(np.average(hit, weights=w))
    best = max(scores, key=lambda c: (scores[c], -c)) if scores else 1.0
    model = LogisticRegression(C=best, class_weight="balanced" if balanced else None, max_iter=5000).fit(x, y, sample_weight=w)
    info = {"C": best, "cv_accuracy": scores.get(best), "n": int(len(y)), "n_distinct": int(groups.max() + 1), "n_positive": int(y.sum())}
    return model.coef_[0].tolist(), float(model.intercept_[0]), info


def fit_heads(x, classes: Sequence[str], texts: Sequence[str], built_on: list[str]):
    """Both heads from input rows and three-class labels (compliance / refusal / partial)."""
    import numpy as np

    from sarft_core.evaluation.judges.head import LinearHead, RefusalHeads
    from sarft_core.evaluation.judges.hybrid import INPUT_NAMES
    from sarft_core.evaluation.metrics import COMPLIANCE, PARTIAL

    x = np.asarray(x, dtype="float64")
    classes = np.asarray(list(classes))
    texts = list(texts)
    refused = classes != COMPLIANCE
    coef, icpt, info_r = fit_logistic(x, refused, texts)
    idx = np.where(refused)[0]
    cols = [i for i, name in enumerate(INPUT_NAMES) if not name.startswith("opening_emb")]
    sub, picpt, info_p = fit_logistic(x[np.ix_(idx, cols)], classes[idx] == PARTIAL, [texts[i] for i in idx], balanced=False)
    pcoef = [0.0] * len(INPUT_NAMES)
    for i, c in zip(cols, sub):
        pcoef[i] = c
    meta = {"built_on": built_on, "recipe": "fit.py: distinct-text weights, balanced classes (refusal head), C by grouped 5-fold CV",
            "refusal_head": info_r, "partial_head": info_p}
    return RefusalHeads(list(INPUT_NAMES), LinearHead(coef, icpt), LinearHead(pcoef, picpt), meta)


def xstest_classes(final_labels: Sequence[str]) -> list[str]:
    """XSTest's ``final_label`` (1_full_compliance, 2_full_refusal, 3_partial_refusal) as our labels."""
    from sarft_core.evaluation.metrics import COMPLIANCE, PARTIAL, REFUSAL

    table = {"1": COMPLIANCE, "2": REFUSAL, "3": PARTIAL}
    out = []
    for lab in final_labels:
        key = str(lab).strip()[:1]
        if key not in table:
            raise SarftError(f"unknown XSTest label {lab!r}", "labels must start with 1_, 2_ or 3_")
        out.append(table[key])
    return out
