"""The one judge interface: (prompts, responses) -> one label per pair.

Every judge returns labels from :data:`sarft_core.evaluation.metrics.LABELS`
(``refusal``, ``partial``, ``compliance``, ``invalid``, ``unknown``). A judge that knows how
sure it is also returns a confidence per verdict (:meth:`Judge.judge_scored`, 0.5..1 for the
binary refusal/not decision); the others return ``None`` there. Judges never generate text for the
model under test and never see the run directory, so saved generations can be re-graded by any
judge at any time.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
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


# ---- the registry's store (sarft_core.evaluation.judges loads the judges' files, which register here)
# the shared settings a judge may read (CLI options --judge-base-url ... map onto these)
OPTION_NAMES = ("base_url", "model", "api_key_env", "concurrency", "max_retries", "timeout", "max_tokens", "cache_dir",
                "classifier_path", "classifier_labels", "classifier_pair", "device")


@dataclass(frozen=True)
class JudgeSpec:
    name: str
    description: str
    build: Callable[[dict], Judge]
    options: tuple[str, ...] = ()  # shared settings it reads (for the UI)
    offline: bool = True  # needs no server or key
    order: int = 100  # place in lists (the default judge always comes first)


JUDGES: dict[str, JudgeSpec] = {}
LOCK = threading.RLock()


def register_judge(name: str, description: str, options: tuple[str, ...] = (), offline: bool = True, order: int = 100):
    """Decorator: register ``build(options: dict) -> Judge`` under ``name`` (lower case)."""
    key = name.strip().lower()
    if not key or "," in key or key != key.split()[0]:
        raise ValueError(f"a judge name is one word without commas, got {name!r}")
    unknown = set(options) - set(OPTION_NAMES)
    if unknown:
        raise ValueError(f"unknown judge options {sorted(unknown)}; known: {', '.join(OPTION_NAMES)}")

    def wrap(build: Callable[[dict], Judge]):
        with LOCK:
            JUDGES[key] = JudgeSpec(key, description, build, tuple(options), offline, order)
        return build

    return wrap
