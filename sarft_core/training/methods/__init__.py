"""Training methods behind one record (:class:`Method`), listed in one registry (:data:`METHODS`).

The registry is the single source of which methods exist: ``train --method``'s choices (through
TrainConfig's ``choice()``), the dashboard's method widget, the runs' labels (whether λ is named),
plot labels and colours, ``reproduce --methods`` and the order of comparisons all read it.
Adding a method is one file in this package (every module here is imported on first use), calling::

    from sarft_core.training.methods.base import Method, register
    register(Method("mine", "Mine", "#123456", dh=..., loss=...))

A method says whether it has a KL term on D_h, how it selects samples (a D_h rule, a drop rule,
or none), its loss hook (None: the RBO objective CE + λ·KL of the trainer), the system prompt it
trains under, and how it is labelled and coloured.
"""
from __future__ import annotations

import importlib
import pkgutil

from sarft_core.errors import SarftError
from sarft_core.training import selection
from sarft_core.training.methods.base import LOCK, METHODS, DhRule, DropRule, LossBatch, Method, register

_LOADED = False


def _load() -> None:
    global _LOADED
    with LOCK:
        if _LOADED:
            return
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def methods() -> list[Method]:
    """Every registered method, in its display order (then by name)."""
    _load()
    return sorted(METHODS.values(), key=lambda m: (m.order, m.name))


def method_names() -> tuple[str, ...]:
    return tuple(m.name for m in methods())


def get_method(name: str) -> Method:
    """The record of ``name``; an unknown name is one clear error."""
    _load()
    found = METHODS.get(str(name).strip().lower())
    if found is None:
        raise SarftError(f"unknown training method {name!r}", f"use one of {', '.join(method_names())}")
    return found


def select_dh(method: str, rows, tau: float = 0.0, overrides=None, seed: int = 0, dh_fraction: float | None = None,
              ranking=None) -> dict[str, bool]:
    """{id: in D_h} for ``method`` by its D_h rule (:func:`sarft_core.training.selection.select_dh`);
    a ValueError for a method without one."""
    rule = get_method(method).dh if method in method_names() else None
    if rule is None:
        raise ValueError(f"select_dh does not handle method {method!r}")
    return selection.select_dh(rule, rows, tau, overrides, seed, dh_fraction=dh_fraction, ranking=ranking)


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
           "method_names", "method_order", "methods", "register", "select_dh"]
