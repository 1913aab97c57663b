"""ROSE (reverse prompt contrastive decoding), a decoding-time safety baseline.

At every step the next token is ``argmax(logits(x | safe system prompt) - alpha *
logits(x | unsafe system prompt))``, alpha = 0.5 as published. Both contexts are decoded side by
side with their own KV cache, and the *chosen contrastive token* is appended to both of them.
(The released code appended each context's own greedy token while recording the contrastive
one, so the text it returned was not the text it had conditioned on, and it re-ran the whole
sequence at every step without a cache.)

Batches are left-padded; position ids come from the attention mask, so a padded row computes
exactly what it would alone.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sarft_core.evaluation.decoding import cut_at_stop, left_pad, stop_token_ids
from sarft_core.scoring.engine import cache_kwarg, output_cache


def contrastive_logits(safe_logits: torch.Tensor, unsafe_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """The ROSE score of every vocabulary entry (pure: testable without a model)."""
    return safe_logits.float() - alpha * unsafe_logits.float()


class _Context:
    """One side (safe or unsafe) of the contrast: its cache, mask and next positions."""

    def __init__(self, model, seqs: Sequence[Sequence[int]], pad_id: int, device):
        ids, self.mask = left_pad(seqs, pad_id, device)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        try:  # only the last position's logits are needed; not every architecture takes the hint
            out = model(input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        except TypeError:
            out = model(input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True)
        self.model = model
        self.cache_kwarg = cache_kwarg(model)
        self.cache = output_cache(out)
        self.next_pos = positions[:, -1] + 1
        self.logits = out.logits[:, -1, :]

    def append(self, tokens: torch.Tensor) -> None:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.model(
            input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.next_pos[:, None],
            use_cache=True, **{self.cache_kwarg: self.cache},
        )
        self.cache = output_cache(out)
        self.next_pos = self.next_pos + 1
        self.logits = out.logits[:, -1, :]


@torch.no_grad()
def rose_ids(lm, safe_ids: Sequence[Sequence[int]], unsafe_ids: Sequence[Sequence[int]], alpha: float = 0.5, max_new_tokens: int = 128) -> list[list[int]]:
    """Contrastive greedy continuations of one batch (row i: safe_ids[i] vs unsafe_ids[i])."""
    tok = lm.tokenizer
    stops = stop_token_ids(lm)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    device = lm.device
    safe = _Context(lm.model, safe_ids, pad_id, device)
    unsafe = _Context(lm.model, unsafe_ids, pad_id, device)
    n = len(safe_ids)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    stop_tensor = torch.tensor(stops or [-1], device=device)
    chosen: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        tokens = contrastive_logits(safe.logits, unsafe.logits, alpha).argmax(dim=-1)
        tokens = torch.where(finished, torch.full_like(tokens, pad_id), tokens)
        chosen.append(tokens)
        finished |= torch.isin(tokens, stop_tensor)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        safe.append(tokens)
        unsafe.append(tokens)
    rows = torch.stack(chosen, dim=1).tolist()
    return [cut_at_stop(r, stops) for r in rows]
