"""Memory pre-flight: refuse work that cannot fit, with a message naming the limit, before an OOM kill.

The estimates are deliberately rough upper bounds of the big tensors of one forward batch (KV
cache, activations, the LM-head logits chunk); the weights are already loaded, so only what the
batch adds is compared with what is still free. The free memory is the smallest of:
- the host's available memory (psutil's ``virtual_memory().available``: on Linux ``MemAvailable``,
  the kernel's estimate of what can be allocated without swap),
- the cgroup limit minus current use (/sys/fs/cgroup/memory.max; containers, batch schedulers),
- ``$SARFT_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix): a cap the user sets on a shared machine,
- on CUDA, the free memory of the device (``torch.cuda.mem_get_info``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sarft_core.errors import SarftError

HEADROOM = 0.9  # leave 10% to the allocator's fragmentation and everything else
_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True)
class FreeMemory:
    bytes: int
    source: str  # which limit it is, for the message


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise SarftError(f"SARFT_MEMORY_LIMIT={text!r} is not a size", "write it in bytes or with K/M/G, e.g. SARFT_MEMORY_LIMIT=8G")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])


def _host_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError, RuntimeError):
        return None


def _cgroup_available(root: str = "/sys/fs/cgroup") -> int | None:
    try:
        limit = Path(root, "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path(root, "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def free_memory(device=None) -> FreeMemory | None:
    """The tightest known limit on new allocations for ``device`` (None when nothing is known)."""
    candidates: list[FreeMemory] = []
    dev = str(device) if device is not None else "cpu"
    if dev.startswith("cuda"):
        try:
            import torch

            free, _total = torch.cuda.mem_get_info(torch.device(dev))
            candidates.append(FreeMemory(int(free), f"free memory on {dev}"))
        except Exception:  # no driver or an odd device string: fall back to the host limits
            pass
    else:
        avail = _host_available()
        if avail is not None:
            candidates.append(FreeMemory(avail, "the memory available on this machine"))
        cgroup = _cgroup_available()
        if cgroup is not None:
            candidates.append(FreeMemory(cgroup, "the cgroup memory limit (/sys/fs/cgroup/memory.max)"))
    cap = os.environ.get("SARFT_MEMORY_LIMIT", "").strip()
    if cap:
        candidates.append(FreeMemory(parse_size(cap), "$SARFT_MEMORY_LIMIT"))
    return min(candidates, key=lambda c: c.bytes) if candidates else None


def _shape(config) -> dict:
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0) or 1)
    return {
        "layers": int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0) or 0),
        "hidden": hidden,
        "heads": heads,
        "kv_heads": int(getattr(config, "num_key_value_heads", 0) or heads),
        "head_dim": int(getattr(config, "head_dim", 0) or (hidden // heads if heads else 0)),
        "intermediate": int(getattr(config, "intermediate_size", 0) or 4 * hidden),
        "vocab": int(getattr(config, "vocab_size", 0) or 0),
    }


def forward_bytes(config, batch: int, context: int, new: int, dtype_bytes: int, logits_rows: int) -> int:
    """Rough peak bytes one forward pass adds: ``batch`` rows attending over ``context`` positions
    (prefix + new tokens), ``new`` of them computed now, and ``logits_rows`` rows of full-vocabulary
    logits held in fp32 (logits, their fp32 copy and the log-softmax)."""
    s = _shape(config)
    kv = 2 * s["layers"] * batch * context * s["kv_heads"] * s["head_dim"] * dtype_bytes
    acts = batch * new * (4 * s["hidden"] + 3 * s["intermediate"]) * dtype_bytes
    scores = batch * s["heads"] * new * context * 4  # one layer's attention weights at a time
    logits = 3 * logits_rows * s["vocab"] * 4
    return kv + acts + scores + logits


def check_fits(needed: int, what: str, fix: str, device=None) -> None:
    """Raise SarftError when ``needed`` bytes exceed the free memory (after headroom)."""
    free = free_memory(device)
    if free is None or needed <= free.bytes * HEADROOM:
        return
    raise SarftError(
        f"{what} needs about {_gib(needed)} of memory, but only {_gib(free.bytes)} is free "
        f"(limit: {free.source})",
        fix,
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_scoring_batch(model, prompt_lengths, answer_lengths, max_batch_tokens: int, max_batch_size: int = 64, chunk_rows: int = 1024) -> None:
    """Pre-flight for RDS scoring: the widest batch :func:`plan_batches` can form from these lengths."""
    if not prompt_lengths:
        return
    width = max(p + a for p, a in zip(prompt_lengths, answer_lengths))
    batch = max(1, min(max_batch_size, len(prompt_lengths), max_batch_tokens // max(width, 1)))
    rows = min(chunk_rows, batch * max(answer_lengths))
    param = next(model.parameters())
    needed = forward_bytes(model.config, batch, width, width, param.element_size(), rows)
    check_fits(needed, f"scoring a batch of {batch} x {width} tokens", "lower --batch-tokens or --limit (or use a machine with more memory)", param.device)


def check_generation_batch(model, prompt_lengths, batch_size: int, max_new_tokens: int, streams: int = 1) -> None:
    """Pre-flight for batched generation: the longest prompts in one batch, plus all new tokens
    (``streams`` = 2 for ROSE, which decodes under two system prompts at once)."""
    if not prompt_lengths:
        return
    batch = max(1, min(batch_size, len(prompt_lengths))) * streams
    context = max(prompt_lengths) + max_new_tokens
    param = next(model.parameters())
    needed = forward_bytes(model.config, batch, context, max(prompt_lengths), param.element_size(), batch)
    check_fits(needed, f"generating for a batch of {batch} prompts of up to {context} tokens",
               "lower --batch-size, --max-new-tokens or --limit (or use a machine with more memory)", param.device)
