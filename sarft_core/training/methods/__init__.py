"""Training methods behind one record (:class:`Method`), listed in one registry (:data:`METHODS`).

The registry is the single source of which methods exist: ``train --method``'s choices (through
TrainConfig's ``choice()``), the dashboard's method widget, the runs' labels (whether λ is named),
plot labels and colours, ``reproduce --methods`` and the order of comparisons all read it.
Adding a method is one file in this package (every module here is imported on first use), calling::

    register(Method("mine", "Mine", "#123456", select=..., loss=...))

A method says whether it has a KL term on D_h, how it selects samples (a D_h rule, a drop rule,
or none), its loss hook (None: the RBO objective CE + λ·KL of the trainer), the system prompt it
trains under, and how it is labelled and coloured.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading

from sarft_core.errors import SarftError
from sarft_core.training.methods.base import DhRule, DropRule, LossBatch, Method

_METHODS: dict[str, Method] = {}
_LOADED = False
_LOCK = threading.RLock()


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a name is registered once: a second record would be ambiguous)."""
    key = method.name
    if not key or key != key.strip().lower() or "," in key or " " in key:
        raise ValueError(f"a method name is one lower-case word without commas, got {key!r}")
    with _LOCK:
        if key in _METHODS and _METHODS[key] != method:
            raise ValueError(f"method {key!r} is registered twice")
        _METHODS[key] = method
    return method


def _load() -> None:
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def methods() -> list[Method]:
    """Every registered method, in its display order (then by name)."""
    _load()
    return sorted(_METHODS.values(), key=lambda m: (m.order, m.name))


def method_names() -> tuple[str, ...]:
    return tuple(m.name for m in methods())


def get_method(name: str) -> Method:
    """The record of ``name``; an unknown name is one clear error."""
    _load()
    found = _METHODS.get(str(name).strip().lower())
    if found is None:
        raise SarftError(f"unknown training method {name!r}", f"use one of {', '.join(method_names())}")
    return found


def kl_methods() -> tuple[str, ...]:
    """Methods whose D_h (chosen by a rule on RDS's flags) gets the KL term."""
    return tuple(m.name for m in methods() if m.dh is not None)


def drop_methods() -> tuple[str, ...]:
    """Methods that select samples to drop (or, with --baseline-use kl, to anchor)."""
    return tuple(m.name for m in methods() if m.drop is not None)


def method_labels() -> dict[str, str]:
    return {m.name: m.label for m in methods()}


def label_colours() -> dict[str, str]:
    """{label: colour}: plots name methods by their labels."""
    return {m.label: m.colour for m in methods()}


def method_order() -> dict[str, int]:
    """{name: rank} for comparisons (SFT before SaRFT, so Δ reads as SaRFT − SFT)."""
    return {m.name: m.order for m in methods()}


__all__ = ["DhRule", "DropRule", "LossBatch", "Method", "drop_methods", "get_method", "kl_methods", "label_colours", "method_labels",
           "method_names", "method_order", "methods", "register"]
