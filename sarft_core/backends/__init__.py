"""Model backends behind one protocol (:class:`Backend`), listed in one registry.

A backend answers three questions about a loaded model (``sarft_core.models.LoadedModel``) on the
same token ids: the greedy continuation of prompts, the log-probability of each answer token
after its prompt (RDS scoring's passes), and, from those, refusal margins. ``torch`` (this
project's engine, the default) and ``vllm`` (where vLLM is installed) ship here; adding one is one
file in this package calling ``register(MyBackend())`` (both from :mod:`sarft_core.backends.base`):
``--backend``'s choices and its one validation (:func:`check_backend`) read the registry.
"""
from __future__ import annotations

import importlib
import pkgutil

from sarft_core.backends.base import BACKENDS, LOCK, Backend, register  # noqa: F401 (Backend, register: the package API)
from sarft_core.errors import SarftError

_LOADED = False


def _load() -> None:
    global _LOADED
    with LOCK:
        if not _LOADED:
            for info in pkgutil.iter_modules(__path__):
                importlib.import_module(f"{__name__}.{info.name}")
            _LOADED = True


def backend_names() -> tuple[str, ...]:
    """Every registered backend, the default (torch) first."""
    _load()
    return tuple(sorted(BACKENDS, key=lambda n: (n != "torch", n)))


def check_backend(name: str) -> None:
    """The one validation of ``--backend``: a known name, and available in this environment."""
    _load()
    backend = BACKENDS.get(name)
    if backend is None:
        raise SarftError(f"unknown backend {name!r}", f"use one of {', '.join(backend_names())}")
    if not backend.available():
        raise SarftError(f"--backend {name}: {backend.description or name} is not installed in this Python environment",
                         backend.install_fix or "use --backend torch (the default)")


def get_backend(name: str) -> Backend:
    check_backend(name)
    return BACKENDS[name]
