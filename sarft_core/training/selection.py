"""Which samples form D_h (the samples the KL term applies to), and which are trained on at all.

Everything here is a pure function of RDS score rows (dicts with at least ``id``,
``logp_role``, ``logp_unsafe``; ``s_role``/``s_unsafe`` when the reference pass was scored).

- ``rds``: harmful when s_unsafe - s_role > tau (tau = 0 as published), then the analyst's
  per-sample overrides win. s_unsafe - s_role = logp_unsafe - logp_role, so the reference pass
  is not needed for the flag.
- ``random``: as many samples as ``rds`` picks, drawn uniformly with a seed.
- ``flip``: the complement of the ``rds`` set.
- with a budget (``dh_fraction`` F): exactly ceil(F * n) samples, the top of a ranking for
  ``sarft``, the bottom for ``flip``, drawn at random for ``random`` (the selection experiment:
  the same number of anchored samples, chosen by the ranking or not). The ranking is RDS's margin,
  or any other harm score (the measured erosion of refusal, sarft_core.scoring.validate).

Overrides file format (written by the dashboard, read by the trainer): a JSON object mapping a
sample id to ``true`` (force into D_h) or ``false`` (force out of D_h); ids not listed keep
their RDS flag. By default it lives beside the cached scores as ``overrides.json``.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from sarft_core.errors import SarftError
from sarft_core.flags import flag_margin, is_flagged

OVERRIDES_FILE = "overrides.json"


def rds_flags(rows: Sequence[Mapping], tau: float = 0.0) -> dict[str, bool]:
    """{id: harmful} with the flag threshold tau on s_unsafe - s_role."""
    return {str(r["id"]): is_flagged(r, tau) for r in rows}


def apply_overrides(flags: Mapping[str, bool], overrides: Mapping[str, bool] | None) -> dict[str, bool]:
    """Flags after the analyst's per-sample decisions; unknown ids are an error (stale file)."""
    out = dict(flags)
    if not overrides:
        return out
    unknown = sorted(set(overrides) - set(flags))
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise SarftError(
            f"the overrides name {len(unknown)} sample id(s) not in this data: {shown}",
            "the overrides file belongs to other data; remove those ids or pass the matching --data",
        )
    out.update({k: bool(v) for k, v in overrides.items()})
    return out


def random_like(flags: Mapping[str, bool], seed: int = 0) -> dict[str, bool]:
    """Same number of flagged samples as ``flags``, chosen uniformly at random (seeded)."""
    ids = sorted(flags)
    k = sum(bool(v) for v in flags.values())
    chosen = set(random.Random(seed).sample(ids, k))
    return {i: i in chosen for i in flags}


def flip(flags: Mapping[str, bool]) -> dict[str, bool]:
    """The complement: every sample RDS did not flag, and none it did."""
    return {i: not bool(v) for i, v in flags.items()}


SUBSETS = ("top", "bottom", "random")


def budget_count(n: int, fraction: float) -> int:
    """ceil(fraction * n), the size of a budgeted subset (a float's last bit never adds one)."""
    if not 0.0 <= fraction <= 1.0:
        raise SarftError(f"fraction {fraction} is outside [0, 1]", "give a fraction such as 0.3")
    return min(n, math.ceil(round(fraction * n, 9)))


def ranked_subset(scores: Mapping[str, float], fraction: float, which: str, seed: int = 0) -> set[str]:
    """Ids of ceil(fraction * n) samples: the highest ``scores`` (``top``), the lowest (``bottom``),
    or drawn uniformly with ``seed`` (``random``); ties are broken by id, so the choice is
    deterministic, and top and bottom are disjoint whenever they fit (2 * count <= n)."""
    if which not in SUBSETS:
        raise ValueError(f"unknown subset {which!r}; one of {SUBSETS}")
    k = budget_count(len(scores), fraction)
    ids = sorted(scores)
    if which == "random":
        return set(random.Random(seed).sample(ids, k))
    bad = [i for i in ids if not math.isfinite(float(scores[i]))]
    if bad:
        raise SarftError(f"the ranking has no finite score for {len(bad)} sample(s) (first: {bad[0]})", "rescore the samples")
    ranked = sorted(ids, key=lambda i: (-float(scores[i]), i))  # one order: the bottom is the top's far end
    return set(ranked[:k] if which == "top" else ranked[len(ranked) - k:])


def margins_of(rows: Sequence[Mapping]) -> dict[str, float]:
    """{id: s_unsafe - s_role}: RDS's ranking of the samples."""
    return {str(r["id"]): flag_margin(r) for r in rows}


def select_dh(rule, rows: Sequence[Mapping], tau: float = 0.0, overrides: Mapping[str, bool] | None = None, seed: int = 0,
              dh_fraction: float | None = None, ranking: Mapping[str, float] | None = None) -> dict[str, bool]:
    """{id: in D_h} under a method's D_h rule (a ``DhRule``: its budget end and its pick from the
    flags): the one rule that builds D_h. ``sarft_core.training.methods.select_dh`` looks the rule
    up by the method's name.

    Without a budget: RDS's flags (margin > tau), shaped first by the analyst's overrides, then
    kept (sarft), matched in number at random (random) or complemented (flip). With
    ``dh_fraction``: ceil(F * n) samples from ``ranking`` (default: the margin), its top for sarft,
    its bottom for flip, at random for random; overrides do not combine with a budget."""
    if dh_fraction is not None:
        if overrides:
            raise SarftError("per-sample overrides and a D_h budget (--dh-fraction) both choose D_h",
                             "use one of them: drop --dh-fraction to apply the reviewed flags, or the overrides to take a fixed fraction")
        scores = dict(ranking) if ranking is not None else margins_of(rows)
        if set(scores) != {str(r["id"]) for r in rows}:
            raise SarftError("the ranking does not cover exactly the scored samples", "rescore the samples and rebuild the ranking")
        chosen = ranked_subset(scores, dh_fraction, rule.budget_end, seed)
        return {str(r["id"]): str(r["id"]) in chosen for r in rows}
    return rule.pick(apply_overrides(rds_flags(rows, tau), overrides), seed)


def top_fraction(scores: Mapping[str, float], fraction: float) -> set[str]:
    """Ids of the ``ceil(fraction * n)`` highest scores (ties broken by id, so deterministic)."""
    if not 0.0 <= fraction <= 1.0:
        raise SarftError(f"fraction {fraction} is outside [0, 1]", "give a fraction such as 0.2")
    k = math.ceil(fraction * len(scores) - 1e-9)
    ranked = sorted(scores, key=lambda i: (-scores[i], i))
    return set(ranked[:k])


def seal_style_drop(rows: Sequence[Mapping], fraction: float) -> set[str]:
    """SEAL-style: rank by a safety-aware score and drop the worst ``fraction``.

    The score is s_unsafe = log p(y | unsafe prompt) - log p(y | no system prompt): how much more
    likely the answer becomes when the base model is told to drop its safety. (SEAL proper learns
    the ranker by bilevel optimisation against a safety dataset; see docs/training.md.)
    """
    return top_fraction({str(r["id"]): float(r["s_unsafe"]) for r in rows}, fraction)


def biselect_drop(rows: Sequence[Mapping], fraction: float) -> set[str]:
    """Bi-Selection-style: both RDS signals, each against the reference pass, used separately.

    A sample is dropped when it is among the top ``fraction`` by s_unsafe (pulled towards the
    unsafe persona) and NOT among the top ``fraction`` by s_role (its answer carries little of the
    character), i.e. unsafe-leaning samples are dropped unless they are strongly in character.
    """
    unsafe_top = top_fraction({str(r["id"]): float(r["s_unsafe"]) for r in rows}, fraction)
    role_top = top_fraction({str(r["id"]): float(r["s_role"]) for r in rows}, fraction)
    return unsafe_top - role_top


# ---- overrides on disk ---------------------------------------------------------------------

def overrides_path(scores_dir: str | Path) -> Path:
    """Where the overrides of one role's scores live (beside the cached scores)."""
    return Path(scores_dir) / OVERRIDES_FILE


def parse_overrides(data, source: str = "overrides") -> dict[str, bool]:
    if not isinstance(data, dict):
        raise SarftError(f"{source}: expected a JSON object {{sample_id: true/false}}", "write e.g. {\"00003\": true, \"00017\": false}")
    bad = [k for k, v in data.items() if not isinstance(v, bool)]
    if bad:
        raise SarftError(f"{source}: values must be true or false (bad ids: {', '.join(map(str, bad[:5]))})", "use true to force a sample into D_h, false to keep it out")
    return {str(k): v for k, v in data.items()}


def load_overrides(path: str | Path) -> dict[str, bool]:
    path = Path(path)
    if not path.is_file():
        raise SarftError(f"overrides file does not exist: {path}", "check the path given to --overrides")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SarftError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})", "fix the file or delete it") from None
    return parse_overrides(data, str(path))


def save_overrides(path: str | Path, overrides: Mapping[str, bool]) -> None:
    from sarft_core.store import atomic_write_json

    atomic_write_json(path, parse_overrides(dict(overrides)))


def summary(flags: Mapping[str, bool], overrides: Mapping[str, bool] | None = None) -> dict:
    n = len(flags)
    k = sum(bool(v) for v in flags.values())
    return {"samples": n, "dh": k, "dh_fraction": (k / n) if n else 0.0, "overrides_count": len(overrides or {})}


def ids_where(flags: Mapping[str, bool], value: bool = True) -> list[str]:
    return sorted(i for i, v in flags.items() if bool(v) is value)


def keep_only(samples: Iterable, drop: set[str]) -> list:
    return [s for s in samples if s.id not in drop]
