"""Judges behind one interface (:class:`Judge`), listed in one registry (:data:`JUDGES`).

The registry is the single source of which judges exist: the CLI's ``--judge`` choices, the
dashboard's judge widget and :func:`build_judge` all read it. Adding a judge is one file in this
package (every module here is imported on first use) or in user code, calling::

    @register_judge("mine", "what it reads, in one line", options=("base_url",))
    def _build(options: dict) -> Judge:
        return MyJudge(...)

``options`` names the shared judge settings it uses (see :data:`OPTION_NAMES`), so the dashboard
shows only those fields for it. Judges shipped here:

- ``hybrid`` (default): keyword rules + MiniLM embeddings + a learnt head; three classes and a
  confidence per verdict (hybrid.py);
- ``keyword``: our refusal-phrase rules, instant (keyword.py);
- ``gcg`` / ``xstest``: the published phrase-matching baselines (keyword.py);
- ``openai``: an LLM judge on any OpenAI-compatible endpoint (openai_judge.py);
- ``classifier``: any Hugging Face text-classification model with a label mapping (classifier.py).
"""
from __future__ import annotations

import importlib
import pkgutil

from sarft_core.errors import SarftError
from sarft_core.evaluation.judges.base import (  # noqa: F401 (the registry's API)
    JUDGES, LOCK, OPTION_NAMES, Judge, JudgeSpec, register_judge,
)

DEFAULT_JUDGE = "hybrid"
_LOADED = False


def _load_builtin() -> None:
    """Import every module of this package once, so each can register its judges."""
    global _LOADED
    with LOCK:
        if _LOADED:
            return
        _LOADED = True
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")


def judge_specs() -> dict[str, JudgeSpec]:
    """Every registered judge, the default first."""
    _load_builtin()
    with LOCK:
        order = sorted(JUDGES, key=lambda n: (n != DEFAULT_JUDGE, JUDGES[n].order, n))
        return {n: JUDGES[n] for n in order}


def judge_names() -> list[str]:
    return list(judge_specs())


def build_judge(name: str, **options) -> Judge:
    """A judge by name; ``options`` are shared settings (each judge reads those it declares)."""
    key = (name or "").strip().lower()
    specs = judge_specs()
    if key not in specs:
        raise SarftError(f"unknown judge {name!r}", f"use one of {', '.join(specs)}")
    spec = specs[key]
    return spec.build({k: options.get(k) for k in spec.options})


class JudgeChoices:
    """The registry as argparse ``choices`` for a comma-separated ``--judge`` value.

    Iterating yields the registered names (read live, so a judge registered after the parser was
    built is listed); ``in`` accepts any comma-separated combination of them.
    """

    def __iter__(self):
        return iter(judge_names())

    def __len__(self):
        return len(judge_names())

    def __contains__(self, value) -> bool:
        names = [n.strip().lower() for n in str(value).split(",") if n.strip()]
        known = set(judge_names())
        return bool(names) and all(n in known for n in names)


__all__ = ["Judge", "JudgeSpec", "JUDGES", "DEFAULT_JUDGE", "OPTION_NAMES", "JudgeChoices", "register_judge",
           "judge_specs", "judge_names", "build_judge"]
