"""The backend protocol and the registry's store (the backends' files import this module, which
imports none of them: the package loads them without a cycle)."""
from __future__ import annotations

import threading
from typing import Callable, Sequence


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


BACKENDS: dict[str, Backend] = {}
LOCK = threading.RLock()


def register(backend: Backend) -> Backend:
    with LOCK:
        BACKENDS[backend.name] = backend
    return backend
