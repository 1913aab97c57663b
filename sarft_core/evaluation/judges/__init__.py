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
import threading
from dataclasses import dataclass
from typing import Callable

from sarft_core.errors import SarftError
from sarft_core.evaluation.judges.base import Judge

DEFAULT_JUDGE = "hybrid"
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
_LOADED = False
_LOCK = threading.RLock()


def register_judge(name: str, description: str, options: tuple[str, ...] = (), offline: bool = True, order: int = 100):
    """Decorator: register ``build(options: dict) -> Judge`` under ``name`` (lower case)."""
    key = name.strip().lower()
    if not key or "," in key or key != key.split()[0]:
        raise ValueError(f"a judge name is one word without commas, got {name!r}")
    unknown = set(options) - set(OPTION_NAMES)
    if unknown:
        raise ValueError(f"unknown judge options {sorted(unknown)}; known: {', '.join(OPTION_NAMES)}")

    def wrap(build: Callable[[dict], Judge]):
        with _LOCK:
            JUDGES[key] = JudgeSpec(key, description, build, tuple(options), offline, order)
        return build

    return wrap


def _load_builtin() -> None:
    """Import every module of this package once, so each can register its judges."""
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        _LOADED = True
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")


def judge_specs() -> dict[str, JudgeSpec]:
    """Every registered judge, the default first."""
    _load_builtin()
    with _LOCK:
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
