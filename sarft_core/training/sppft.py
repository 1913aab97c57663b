"""SPPFT baseline: find the model's "safety layers" and keep them frozen during fine-tuning.

Following Li et al. ("Safety Layers in Aligned LLMs"): take the last-token hidden state of each
layer for benign and for harmful prompts; per layer, compare the mean cosine similarity of
benign-benign pairs with that of benign-harmful pairs. In aligned models the two curves agree in
the first layers, split apart in a contiguous block of middle layers (the model starts to tell
harmful from benign) and the gap stops growing afterwards. The safety layers are that block: from
the first layer whose gap reaches ``start_fraction`` of the largest gap, to the layer where the
gap peaks. (The paper refines the upper bound with a parameter-scaling over-rejection test; we do
not, see docs/training.md.)
"""
from __future__ import annotations

from typing import Sequence

import torch

from sarft_core.chat import encode
from sarft_core.errors import SarftError


def layer_range_form(text: str) -> tuple[int, int]:
    """'6-12' or '7' -> inclusive 0-based (start, end), checked for its form only (no model needed)."""
    try:
        parts = [int(p) for p in str(text).replace(":", "-").split("-")]
    except ValueError:
        raise SarftError(f"bad --freeze-layers {text!r}", "write a range like 6-12 (0-based, inclusive)") from None
    if len(parts) == 1:
        parts = parts * 2
    start, end = parts[0], parts[-1]
    if len(parts) > 2 or start < 0 or end < start:
        raise SarftError(f"bad --freeze-layers {text!r}: not a range START-END with 0 <= START <= END",
                         "write a range like 6-12 (0-based, inclusive)")
    return start, end


def parse_layer_range(text: str, n_layers: int) -> tuple[int, int]:
    """'6-12' or '7' -> inclusive 0-based (start, end), checked against the model's depth."""
    start, end = layer_range_form(text)
    if end >= n_layers:
        raise SarftError(f"--freeze-layers {text!r} is not a range inside 0-{n_layers - 1}", f"give START-END with 0 <= START <= END < {n_layers}")
    return start, end


def _mean_pair_cosine(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Mean cosine similarity per layer. a, b: (layers, n, d). b=None: distinct pairs within a."""
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    if b is None:
        n = a.shape[1]
        sims = a @ a.transpose(1, 2)
        off = ~torch.eye(n, dtype=torch.bool)
        return sims[:, off].mean(-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return (a @ b.transpose(1, 2)).mean(dim=(1, 2))


def similarity_gap(benign_states: torch.Tensor, harmful_states: torch.Tensor) -> list[float]:
    """Per layer: mean cos(benign, benign) - mean cos(benign, harmful)."""
    nn_sim = _mean_pair_cosine(benign_states, None)
    nm_sim = _mean_pair_cosine(benign_states, harmful_states)
    return (nn_sim - nm_sim).tolist()


def safety_block(gap: Sequence[float], start_fraction: float = 0.2) -> tuple[int, int]:
    """Inclusive (start, end) of the layers where the gap emerges and grows to its peak."""
    if not gap:
        raise ValueError("empty gap curve")
    peak = max(range(len(gap)), key=lambda i: gap[i])
    top = gap[peak]
    if top <= 0:
        return peak, peak
    start = next(i for i in range(peak + 1) if gap[i] >= start_fraction * top)
    return start, peak


@torch.no_grad()
def last_token_states(model, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """(layers, n, d): each layer's output at the last prompt token (empty system prompt)."""
    device = next(model.parameters()).device
    rows = []
    for text in prompts:
        ids = encode(tokenizer, "", text).prompt_ids
        out = model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True)
        # hidden_states[0] is the embedding output; [1:] are the decoder layers' outputs
        rows.append(torch.stack([h[0, -1] for h in out.hidden_states[1:]]).cpu())
    return torch.stack(rows, dim=1)


def detect_safety_layers(model, tokenizer, benign: Sequence[str], harmful: Sequence[str], start_fraction: float = 0.2) -> dict:
    if len(benign) < 2 or not harmful:
        raise SarftError("safety-layer detection needs at least 2 benign and 1 harmful prompt", "check data/probes.jsonl")
    gap = similarity_gap(last_token_states(model, tokenizer, benign), last_token_states(model, tokenizer, harmful))
    start, end = safety_block(gap, start_fraction)
    return {"start": start, "end": end, "gap": gap, "benign": len(benign), "harmful": len(harmful)}


def load_probe_prompts(path) -> tuple[list[str], list[str]]:
    import json

    benign, harmful = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                (harmful if row.get("label") == "harmful" else benign).append(row["prompt"])
    return benign, harmful


def decoder_layers(model):
    """The list of decoder blocks of a (possibly PEFT-wrapped) causal LM."""
    base = model
    for attr in ("get_base_model",):
        if hasattr(base, attr):
            base = getattr(base, attr)()
    inner = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", base)
    layers = getattr(inner, "layers", None) or getattr(inner, "h", None)
    if layers is None:
        raise SarftError("cannot find the decoder layers of this model for SPPFT", "use --freeze-layers with a Llama-like model, or another method")
    return layers


def freeze_layers(model, start: int, end: int) -> int:
    """Stop gradients for every parameter of layers start..end; returns how many were frozen."""
    n = 0
    for layer in list(decoder_layers(model))[start : end + 1]:
        for p in layer.parameters():
            if p.requires_grad:
                p.requires_grad_(False)
                n += p.numel()
    return n
