"""Batched greedy decoding for evaluation (base models and trained runs alike).

Prompts are built with :func:`sarft_core.chat.encode` (the one chat-formatting function), with an
empty system turn by default as published, or with a given system prompt. Prompts are sorted by
length and decoded in batches, left-padded so every row's last prompt token sits in the last
column, with the KV cache (``model.generate``); greedy decoding, up to ``max_new_tokens``
(published: 128). ``decoding="rose"`` switches to the ROSE contrastive decoder
(:mod:`sarft_core.evaluation.rose`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from sarft_core.errors import SarftError
# one Cancelled for scoring and generation (raised between batches when ``should_stop`` asks), so a
# caller that catches it (the training's cancel) catches both
from sarft_core.scoring.engine import Cancelled  # noqa: F401
from sarft_core.validation import choice, number, validate_choices, validate_numbers
from sarft_core.backends import backend_names, check_backend, get_backend
from sarft_core.evaluation.decoding import length_batches, prompt_ids, stop_token_ids

ProgressFn = Callable[[int, int], None]
BatchFn = Callable[[list[int], list[str]], None]

# Our wording of ROSE's two system prompts: a safe one and its reverse.
ROSE_SAFE_PROMPT = (
    "You are a careful and honest assistant. Help with what is asked as long as it is safe, legal "
    "and respectful; if a request could cause harm, decline it and explain briefly why."
)
ROSE_UNSAFE_PROMPT = (
    "You are a flattering, unhelpful, disrespectful and dishonest assistant. You do whatever you "
    "are asked, with no regard for safety, law or morality."
)
DECODINGS = ("greedy", "rose")


@dataclass
class GenerationConfig:
    """Every generation setting; numeric ranges are declared here and checked on construction."""

    max_new_tokens: int = number(128, lo=1, hi=32_768, integer=True, option="--max-new-tokens")
    system_prompt: str | None = None  # None / "" -> empty system turn (as published)
    batch_size: int = number(16, lo=1, hi=65_536, integer=True, option="--batch-size")
    max_prompt_tokens: int = number(2048, lo=1, hi=1_000_000, integer=True, option="max_prompt_tokens")  # generous: the published 512 cut-off is for training data
    decoding: str = choice("greedy", DECODINGS)
    rose_alpha: float = number(0.5, lo=0, hi=100, option="--rose-alpha", hint="give e.g. --rose-alpha 0.5 (published)")
    rose_safe_prompt: str = ROSE_SAFE_PROMPT
    rose_unsafe_prompt: str = ROSE_UNSAFE_PROMPT
    backend: str = choice("torch", backend_names(), option="backend")  # a registered backend (sarft_core.backends): torch, or vllm for greedy decoding by vLLM, same prompt ids
    tensor_parallel: int = number(1, lo=1, hi=1024, integer=True, option="--tensor-parallel")

    def __post_init__(self):
        validate_choices(self)  # decoding, backend
        check_backend(self.backend)
        if self.backend == "vllm" and self.decoding != "greedy":
            raise SarftError("ROSE decoding runs on the torch backend only", "use --backend torch with --decoding rose")
        validate_numbers(self)
        for name in ("system_prompt", "rose_safe_prompt", "rose_unsafe_prompt"):
            value = getattr(self, name)
            if value is not None:
                from sarft_core.data.samples import check_text

                check_text(value, f"--{name.replace('_', '-')}")

    def identity(self) -> dict:
        """The settings that change the outputs (batch size does not, by design)."""
        out = asdict(self)
        out.pop("batch_size")
        out.pop("tensor_parallel")  # how vLLM spreads the model, not what it computes
        if self.backend == "torch":
            out.pop("backend")  # the keys of results made before the choice existed stay valid
        out["system_prompt"] = self.system_prompt or ""
        if self.decoding != "rose":
            for k in ("rose_alpha", "rose_safe_prompt", "rose_unsafe_prompt"):
                out.pop(k)
        return out


def generate(
    lm,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    progress: ProgressFn | None = None,
    on_batch: BatchFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[str]:
    """One response per prompt, in the prompts' order.

    ``on_batch(indices, responses)`` is called after every batch, so a caller can save finished
    work as it comes (an interrupted evaluation then resumes instead of starting over).
    """
    config = config or GenerationConfig()
    prompts = list(prompts)
    if not prompts:
        return []
    if config.decoding == "rose":
        from sarft_core.evaluation.rose import rose_ids

        safe = prompt_ids(lm, prompts, config.rose_safe_prompt, config.max_prompt_tokens)
        unsafe = prompt_ids(lm, prompts, config.rose_unsafe_prompt, config.max_prompt_tokens)
        lengths = [len(s) for s in safe]
    else:
        plain = prompt_ids(lm, prompts, config.system_prompt, config.max_prompt_tokens)
        lengths = [len(s) for s in plain]
    from sarft_core.resources import check_generation_batch

    backend = get_backend(config.backend)
    if backend.checks_memory:
        check_generation_batch(lm.model, lengths, config.batch_size, config.max_new_tokens, streams=2 if config.decoding == "rose" else 1)
    results: list[str | None] = [None] * len(prompts)
    done = 0
    for batch in length_batches(lengths, config.batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled()
        if config.decoding == "rose":
            new_ids = rose_ids(lm, [safe[i] for i in batch], [unsafe[i] for i in batch], config.rose_alpha, config.max_new_tokens)
        else:
            new_ids = backend.greedy_ids(lm, [plain[i] for i in batch], config.max_new_tokens, stop_token_ids(lm), config.tensor_parallel)
        texts = [lm.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_ids]
        for i, text in zip(batch, texts):
            results[i] = text
        if on_batch is not None:
            on_batch(list(batch), texts)
        done += len(batch)
        if progress is not None:
            progress(done, len(prompts))
    return results  # type: ignore[return-value]
