"""The greedy decoding kernel: left-padded batches through ``model.generate`` with the KV cache,
and the token-level helpers it and ROSE share. The torch backend's generation is this module;
:mod:`sarft_core.evaluation.generation` (which picks a backend per run) sits above it.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sarft_core.chat import encode
from sarft_core.errors import SarftError


def stop_token_ids(lm) -> list[int]:
    """EOS ids of the tokenizer and the model's generation config (some chat models have several)."""
    ids = set()
    for source in (getattr(lm.model, "generation_config", None), lm.tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    return sorted(ids)


def prompt_ids(lm, prompts: Sequence[str], system: str | None, max_prompt_tokens: int) -> list[list[int]]:
    return [encode(lm.tokenizer, system, p, max_prompt_tokens=max_prompt_tokens).prompt_ids for p in prompts]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), each row right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[row, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def cut_at_stop(ids: Sequence[int], stops: Sequence[int]) -> list[int]:
    out = []
    for t in ids:
        if t in stops:
            break
        out.append(int(t))
    return out


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class _FiniteLogits:
    """A logits processor that refuses NaN / inf scores: greedy argmax over NaN picks token 0 (or
    stops at once), so a broken model would otherwise "answer" with empty or garbage text."""

    def __call__(self, input_ids, scores):
        if not bool(torch.isfinite(scores).all()):
            # -inf is how processors mask tokens; only NaN or +inf (or a row that is all -inf) is broken
            bad = torch.isnan(scores).any() or torch.isposinf(scores).any() or bool((scores == float("-inf")).all(dim=-1).any())
            if bad:
                raise SarftError(
                    "the model produced non-finite (NaN or inf) logits while generating",
                    "its weights or precision are broken: try --dtype float32, or check the model (a diverged training run?)",
                )
        return scores


@torch.no_grad()
def greedy_ids(lm, batch_prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation ids of one batch via ``model.generate`` (left padding, KV cache)."""
    from transformers import GenerationConfig as HFGenerationConfig
    from transformers import LogitsProcessorList

    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stop_token_ids(lm)[0]
    stops = stop_token_ids(lm)
    ids, mask = left_pad(batch_prompt_ids, pad_id, lm.device)
    config = HFGenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
        pad_token_id=pad_id, eos_token_id=stops or None,
    )
    out = lm.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, logits_processor=LogitsProcessorList([_FiniteLogits()]))
    new = out[:, ids.shape[1]:].tolist()
    return [cut_at_stop(row, stops) for row in new]
