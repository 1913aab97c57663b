"""The one judge interface: (prompts, responses) -> one label per pair.

Every judge returns labels from :data:`sarft_core.evaluation.metrics.LABELS`
(``refusal``, ``partial``, ``compliance``, ``invalid``, ``unknown``). A judge that knows how
sure it is also returns a confidence per verdict (:meth:`Judge.judge_scored`, 0.5..1 for the
binary refusal/not decision); the others return ``None`` there. Judges never generate text for the
model under test and never see the run directory, so saved generations can be re-graded by any
judge at any time.
"""
from __future__ import annotations

from typing import Callable, Sequence

from sarft_core.evaluation.metrics import COMPLIANCE, INVALID, LABELS, PARTIAL, REFUSAL, UNKNOWN

ProgressFn = Callable[[int, int], None]

__all__ = ["Judge", "ProgressFn", "REFUSAL", "PARTIAL", "COMPLIANCE", "INVALID", "UNKNOWN", "LABELS"]


class Judge:
    """Base class; subclasses set ``name`` and implement :meth:`judge`."""

    name = "judge"

    def judge(self, prompts: Sequence[str], responses: Sequence[str], progress: ProgressFn | None = None) -> list[str]:
        raise NotImplementedError

    def judge_scored(self, prompts: Sequence[str], responses: Sequence[str], progress: ProgressFn | None = None) -> tuple[list[str], list[float | None]]:
        """Labels and, per label, the judge's confidence (None when the judge has none)."""
        labels = self.judge(prompts, responses, progress)
        return labels, [None] * len(labels)

    def describe(self) -> dict:
        """What identifies this judge's verdicts (stored beside metrics)."""
        return {"judge": self.name}
