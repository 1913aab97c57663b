"""Model backends behind one protocol (:class:`Backend`), listed in one registry.

A backend answers three questions about a loaded model (``sarft_core.models.LoadedModel``) on the
same token ids: the greedy continuation of prompts, the log-probability of each answer token
after its prompt (RDS scoring's passes), and, from those, refusal margins. ``torch`` (this
project's engine, the default) and ``vllm`` (where vLLM is installed) ship here; adding one is one
file in this package calling ``register(MyBackend())``: ``--backend``'s choices and its one
validation (:func:`check_backend`) read the registry.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Callable, Sequence

from sarft_core.errors import SarftError


class Backend:
    """The protocol; ``margins`` is derived from ``answer_logps`` unless a backend has a faster way."""

    name: str = ""
    description: str = ""
    install_fix: str = ""  # how to make an unavailable backend available
    checks_memory: bool = False  # generation's batch is sized against this process's memory

    def available(self) -> bool:
        raise NotImplementedError

    def greedy_ids(self, lm, prompts: Sequence[Sequence[int]], max_new_tokens: int, stops: Sequence[int],
                   tensor_parallel: int = 1) -> list[list[int]]:
        """Greedy continuation ids of each prompt, cut at the first stop token."""
        raise NotImplementedError

    def answer_logps(self, lm, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], tensor_parallel: int = 1,
                     max_batch_tokens: int = 4096, progress: Callable[[int, int], None] | None = None) -> list[list[float]]:
        """log p(answer token | everything before it), per token, of each (prompt, answer) pair."""
        raise NotImplementedError

    def margins(self, lm, refusals: tuple[list, list], compliances: tuple[list, list], tensor_parallel: int = 1,
                max_batch_tokens: int = 4096, progress: Callable[[int, int], None] | None = None) -> tuple[list, list]:
        """Per-token log-probs of the refusal and of the compliant continuations ((prompts, answers) each)."""
        n = len(refusals[0])

        def half(offset):
            return None if progress is None else (lambda done, total: progress(offset + done, 2 * n))

        return (self.answer_logps(lm, *refusals, tensor_parallel, max_batch_tokens, half(0)),
                self.answer_logps(lm, *compliances, tensor_parallel, max_batch_tokens, half(n)))


_BACKENDS: dict[str, Backend] = {}
_LOADED = False
_LOCK = threading.RLock()


def register(backend: Backend) -> Backend:
    with _LOCK:
        _BACKENDS[backend.name] = backend
    return backend


def _load() -> None:
    global _LOADED
    with _LOCK:
        if not _LOADED:
            for info in pkgutil.iter_modules(__path__):
                importlib.import_module(f"{__name__}.{info.name}")
            _LOADED = True


def backend_names() -> tuple[str, ...]:
    """Every registered backend, the default (torch) first."""
    _load()
    return tuple(sorted(_BACKENDS, key=lambda n: (n != "torch", n)))


def check_backend(name: str) -> None:
    """The one validation of ``--backend``: a known name, and available in this environment."""
    _load()
    backend = _BACKENDS.get(name)
    if backend is None:
        raise SarftError(f"unknown backend {name!r}", f"use one of {', '.join(backend_names())}")
    if not backend.available():
        raise SarftError(f"--backend {name}: {backend.description or name} is not installed in this Python environment",
                         backend.install_fix or "use --backend torch (the default)")


def get_backend(name: str) -> Backend:
    check_backend(name)
    return _BACKENDS[name]
