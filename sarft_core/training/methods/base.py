"""The record of one training method and the two kinds of selection rule it may carry."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

# the RDS passes a rule reads: D_h rules need the margin only; drop rules rank by s_role / s_unsafe,
# each against the reference pass
DH_PASSES = ("role", "unsafe")
DROP_PASSES = ("ref", "role", "unsafe")


@dataclass(frozen=True)
class DhRule:
    """D_h from RDS's (reviewed) flags: ``pick(flags, seed)``; with a budget, ``budget_end`` of the
    ranking (top, bottom or random) is taken instead."""

    budget_end: str
    pick: Callable[[Mapping[str, bool], int], dict[str, bool]]


@dataclass(frozen=True)
class DropRule:
    """The ids to drop (or, with --baseline-use kl, to anchor): ``pick(rows, fraction)``."""

    pick: Callable[[Sequence[Mapping], float], set[str]]


@dataclass(frozen=True)
class LossBatch:
    """What a loss hook sees of one micro-batch, aligned for next-token prediction (B rows, K positions).

    ``reference_logp`` is log p_ref(target) per position (the adapter disabled, or the frozen
    copy), given to methods whose record asks for it (``reference_tokens``); 0 where no answer token."""

    logp: Any  # (B, K, V) the policy's log-probabilities
    targets: Any  # (B, K) answer token ids, IGNORE_INDEX elsewhere
    answer_mask: Any  # (B, K) True at answer positions
    answer_index: Any  # (B, K) 0-based index of the target within its answer (t - 1 in the papers' notation)
    nonpad: Any  # (B,) non-pad tokens per row
    normalisation: str
    total_tokens: float | None  # the step's answer tokens when the loss is a share of the step's mean
    reference_logp: Any = None


@dataclass(frozen=True)
class Method:
    """One training method: its name, selection rule, loss hook, training prompt and presentation."""

    name: str
    label: str
    colour: str
    description: str = ""
    dh: DhRule | None = None  # a KL term on D_h chosen by this rule
    drop: DropRule | None = None  # samples dropped (or anchored) by this rule
    # the loss hook: (LossBatch) -> (loss, ce, kl); None is the trainer's RBO objective CE + λ·KL
    loss: Callable[[LossBatch], tuple] | None = None
    reference_tokens: bool = False  # the loss reads log p_ref of every answer token (LossBatch.reference_logp)
    # the system turn of the training prompts, from the role profile (empty, as published, by default)
    system: Callable[[Any], str] | None = None
    # the system turn it is tested under in the grid's panel, from the role profile (None: empty, as published)
    eval_system: Callable[[Any], str] | None = None
    labels_lambda: bool = True  # a run's label names λ (methods with no KL term leave it out)
    order: int = 100  # place in lists and comparisons

    @property
    def has_kl(self) -> bool:
        """Whether λ weighs a KL term for this method (drop rules: only with --baseline-use kl)."""
        return self.dh is not None or self.drop is not None

    @property
    def passes(self) -> tuple[str, ...]:
        return DROP_PASSES if self.drop is not None else DH_PASSES

    def system_prompt(self, profile) -> str:
        return self.system(profile) if self.system is not None else ""

    def eval_system_prompt(self, profile) -> str:
        return self.eval_system(profile) if self.eval_system is not None else ""


# the registry's store: the methods' files register here (this module imports none of them, so the
# package can load them without a cycle)
METHODS: dict[str, Method] = {}
LOCK = threading.RLock()


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a name is registered once: a second record would be ambiguous)."""
    key = method.name
    if not key or key != key.strip().lower() or "," in key or " " in key:
        raise ValueError(f"a method name is one lower-case word without commas, got {key!r}")
    with LOCK:
        if key in METHODS and METHODS[key] != method:
            raise ValueError(f"method {key!r} is registered twice")
        METHODS[key] = method
    return method
