"""A packed, padding-free forward pass for Llama-family decoders on the CPU, built for RDS scoring.

The generic engine path runs the Hugging Face forward on right-padded batches with the shared
prefix's KV cache expanded to every row. This path computes the same numbers with less work:
- the suffix tokens of a batch are packed into one (tokens x hidden) matrix, so every linear
  layer multiplies only real tokens (no padding rows), in large, efficient matmuls;
- attention is split in two and merged exactly through the log-sum-exp (cascade attention):
  all queries attend to the shared prefix in ONE call against the un-replicated prefix keys
  (grouped-query heads read their shared key head directly: no ``repeat_kv`` copy), and
  each sample attends causally to its own suffix in a right-padded call (a real query never
  sees a padded key: padding sits only after it);
- on the CPU every linear layer (and the LM head) runs oneDNN's inner product on weights
  reordered once into its blocked layout (:func:`_onednn_linear_op`); on AMD processors this
  measured 2.3x MKL's float32 GEMM, which ``F.linear`` would use;
- the precision is a policy (see :class:`PackedLlama`): IEEE ``float32`` everywhere (exact), or
  ``bfloat16`` weights and matmul inputs (the fast mode's screen); the residual stream, norms,
  attention and the final log-softmax stay float32 in both.

It reuses the model's own modules (norms, rotary embedding); the matmul weights are copied once,
into oneDNN's layout (at most PREPACK_MAX_BYTES of float32 copies; beyond that the model's own
weights are used as they are). Only architectures whose forward is exactly "Llama" are accepted
(:func:`supports`); everything else goes through the generic path.
"""
from __future__ import annotations

import math
import os
import sys
import threading
from contextlib import contextmanager, nullcontext
from typing import Sequence

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")


def supports(model) -> bool:
    """True when ``model`` is a decoder this module reproduces exactly, on the CPU.

    On GPUs the generic path's fused attention kernels are used instead: this module's speed
    was measured only on the CPU (no GPU was available to validate it).
    """
    cfg = getattr(model, "config", None)
    try:
        if next(model.parameters()).device.type != "cpu":
            return False
    except (StopIteration, AttributeError):
        return False
    if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED_TYPES:
        return False
    if getattr(model, "peft_config", None) or hasattr(model, "base_model_prefix") and hasattr(model, "active_adapters") and _has_adapters(model):
        return False
    if getattr(cfg, "use_sliding_window", False) or (getattr(cfg, "sliding_window", None) and cfg.model_type == "mistral"):
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
        return False
    decoder = getattr(model, "model", None)
    if decoder is None or not hasattr(decoder, "rotary_emb") or not hasattr(decoder, "layers"):
        return False
    attn = decoder.layers[0].self_attn
    return all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) and not hasattr(attn, "q_norm")


def _has_adapters(model) -> bool:
    try:
        return bool(model.active_adapters())
    except Exception:
        return False


def _attention(q, k, v, causal: bool):
    """(out, lse) of softmax(q k^T / sqrt(d)) v with grouped-query heads.

    q (B, H, L, D), k/v (B, Hkv, S, D) with H a multiple of Hkv (query head h reads key head
    h // (H / Hkv)); any strides. Returns out (B, H, L, D) and lse (B, H, L) in float32.
    ``causal`` aligns the mask top-left (query i sees keys 0..i), so use it only with L == S.
    """
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None and q.device.type == "cpu":
        return op(q, k, v, 0.0, causal)
    return attention_reference(q, k, v, causal)


def attention_reference(q, k, v, causal: bool):
    """The same as :func:`_attention`, written out (scores materialised): the yardstick in tests."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q.float() @ k.float().transpose(-1, -2)) * scale
    if causal:
        L, S = s.shape[-2:]
        s = s.masked_fill(torch.ones(L, S, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    out = (torch.exp(s - lse[..., None]) @ v.float()).to(q.dtype)
    return out, lse


PRECISIONS = ("float32", "bfloat16")
# float32 weight copies in oneDNN's layout are made only up to this size (the bfloat16 policy
# copies its weights anyway, so it always reorders them)
PREPACK_MAX_BYTES = 2 << 30


_PRECISION_LOCK = threading.Lock()
_ieee_users = 0
_ieee_saved: str | None = None


@contextmanager
def ieee_matmuls():
    """IEEE float32 matmuls inside (oneDNN's ``fp32_precision`` = "ieee"), even under a global
    ``torch.set_float32_matmul_precision("medium")`` (which on CPUs with bf16 means bf16 math).

    The switch is process-global, so concurrent scorers share one override: the first to enter
    sets it, the last to leave restores what was there before.
    """
    global _ieee_users, _ieee_saved
    backend = getattr(torch.backends.mkldnn, "matmul", None)
    if backend is None or not hasattr(backend, "fp32_precision"):  # an older torch: plain float32
        yield
        return
    with _PRECISION_LOCK:
        if _ieee_users == 0:
            _ieee_saved = backend.fp32_precision
            backend.fp32_precision = "ieee"
        _ieee_users += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _ieee_users -= 1
            if _ieee_users == 0:
                backend.fp32_precision = _ieee_saved


def _onednn_linear_op():
    """oneDNN's inner product (``torch.ops.mkldnn._linear_pointwise``) for CPU tensors, or None.

    On the CPU, ``F.linear`` in float32 goes to MKL's sgemm. On AMD processors MKL does not use
    its AVX-512 kernels; oneDNN's float32 kernel on weights reordered once into its blocked
    layout measured 2.3x faster here (about 480 vs 208 GFLOP/s on the decoder's shapes; 459 vs
    176 on the LM head), and 1.3x faster in bfloat16 than ``F.linear`` (920 vs 700). In float32
    its arithmetic is IEEE (no reduced-precision math attribute under the ``ieee`` mode this
    module sets); only the summation order differs. ``SARFT_ONEDNN=0`` turns it off (for
    comparisons).
    """
    if os.environ.get("SARFT_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return None
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


class PackedLlama:
    """Scoring forward of a Llama-family model on packed suffixes after a shared prefix.

    ``precision``:
    - ``float32``: IEEE float32 throughout (the exact path);
    - ``bfloat16``: bfloat16 copies of the matmul weights and bfloat16 matmul inputs; the
      residual stream, norms, attention and log-softmax stay float32 (the fast mode's screen).
    """

    _PROJECTIONS = (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "up_proj", "down_proj")))

    def __init__(self, model, precision: str = "float32"):
        if not supports(model):
            raise ValueError(f"packed scoring does not support {type(model).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; one of {PRECISIONS}")
        # only submodules are kept, never the model itself, so a cache keyed weakly by the
        # model does not keep it alive
        self.decoder = model.model
        self.lm_head = model.get_output_embeddings()
        self.cfg = model.config
        self.device = next(model.parameters()).device
        self.heads = self.cfg.num_attention_heads
        self.kv_heads = getattr(self.cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(self.cfg, "head_dim", None) or self.cfg.hidden_size // self.heads
        self._apply_rope = sys.modules[type(self.decoder.layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self._op = _onednn_linear_op() if self.device.type == "cpu" else None
        self._weights = self._matmul_weights()

    def _matmul_weights(self) -> dict:
        """The weight each linear module multiplies with: the module's own (in its own dtype)
        or, in the bfloat16 policy, a bfloat16 copy; on the CPU reordered once into oneDNN's
        blocked layout (float32 copies only up to PREPACK_MAX_BYTES)."""
        mods = [getattr(getattr(layer, part), n) for layer in self.decoder.layers for part, names in self._PROJECTIONS for n in names]
        mods.append(self.lm_head)
        target = {m: torch.bfloat16 if self.dtype == torch.bfloat16 else m.weight.dtype for m in mods}
        copy_bytes = sum(m.weight.numel() * target[m].itemsize for m in mods if target[m] == m.weight.dtype)
        reorder = self._op is not None and copy_bytes <= PREPACK_MAX_BYTES
        weights = {}
        for m in mods:
            w = m.weight.detach().to(target[m])
            if reorder and w.dtype in (torch.float32, torch.bfloat16):
                try:
                    w = torch.ops.mkldnn._reorder_linear_weight(w, 2048)
                except (RuntimeError, AttributeError):  # a torch without it: the plain layout
                    reorder = False
            weights[m] = w
        return weights

    # -- pieces ------------------------------------------------------------------------------
    def _dense(self, x, mod):
        """``mod(x)`` in this policy's precision: the module's dtype, or bfloat16 out of a
        bfloat16 matmul."""
        w = self._weights[mod]
        dtype = torch.bfloat16 if self.dtype == torch.bfloat16 else mod.weight.dtype
        x = x.to(dtype)
        bias = mod.bias if mod.bias is not None and mod.bias.dtype == dtype else None
        if self._op is not None and dtype in (torch.float32, torch.bfloat16):
            y = self._op(x.contiguous(), w, bias, "none", [], "")
        else:
            y = F.linear(x, w, bias)
        if bias is None and mod.bias is not None:
            y = y + mod.bias.to(y.dtype)
        return y

    def _rotary(self, positions):
        """(cos, sin) of the rotary embedding at ``positions``, computed once for all layers."""
        probe = torch.empty(0, dtype=torch.float32, device=self.device)
        return self.decoder.rotary_emb(probe, positions[None, :])

    def _qkv(self, h, attn, rotary):
        """Post-RoPE q (1, H, T, D), k and v (1, Hkv, T, D): views of token-major (T, heads, D) data."""
        T = h.shape[0]
        q = self._dense(h, attn.q_proj).float().view(1, T, self.heads, self.head_dim).transpose(1, 2)
        k = self._dense(h, attn.k_proj).float().view(1, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self._dense(h, attn.v_proj).float().view(1, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = self._apply_rope(q, k, *rotary)  # unsqueeze_dim=1 broadcasts cos/sin over heads
        return q, k, v

    def _mlp(self, h, mlp):
        g = self._dense(h, mlp.gate_proj)
        u = self._dense(h, mlp.up_proj)
        return self._dense(F.silu(g, inplace=True).mul_(u), mlp.down_proj).float()

    # -- prefix -------------------------------------------------------------------------------
    def _strict(self):
        """IEEE float32 for everything not explicitly switched, even under a global
        ``torch.set_float32_matmul_precision("medium")`` (which on the CPU means bf16)."""
        return ieee_matmuls() if self.device.type == "cpu" else nullcontext()

    @torch.no_grad()
    def prefix(self, ids: Sequence[int]):
        """Per-layer post-RoPE (key, value), each (1, Hkv, P, D) float32, of a shared prefix."""
        if not ids:
            return None
        with self._strict():
            return self._prefix(ids)

    def _prefix(self, ids: Sequence[int]):
        x = self.decoder.embed_tokens(torch.tensor(ids, device=self.device)).float()
        rotary = self._rotary(torch.arange(len(ids), device=self.device))
        kv = []
        for layer in self.decoder.layers:
            attn = layer.self_attn
            q, k, v = self._qkv(layer.input_layernorm(x), attn, rotary)
            kv.append((k.contiguous(), v.contiguous()))
            o, _ = _attention(q, k, v, causal=True)
            o = o[0].transpose(0, 1).reshape(len(ids), -1)
            x = x + self._dense(o, attn.o_proj).float()
            x = x + self._mlp(layer.post_attention_layernorm(x), layer.mlp)
        return kv

    # -- packed suffixes ----------------------------------------------------------------------
    @torch.no_grad()
    def hidden(self, suffixes: Sequence[Sequence[int]], prefix_kv, start: int) -> torch.Tensor:
        """Final-norm hidden states of every suffix token, packed in order: (sum of lengths, hidden)."""
        with self._strict():
            return self._hidden(suffixes, prefix_kv, start)

    def _hidden(self, suffixes: Sequence[Sequence[int]], prefix_kv, start: int) -> torch.Tensor:
        dev = self.device
        lengths = [len(s) for s in suffixes]
        T, B, width = sum(lengths), len(lengths), max(lengths)
        H, Hkv, D = self.heads, self.kv_heads, self.head_dim
        flat = torch.tensor([t for s in suffixes for t in s], device=dev)
        local = torch.cat([torch.arange(n, device=dev) for n in lengths])
        # where each packed token sits in the token-major (B * width) padded layout of the suffix attention
        slot = torch.repeat_interleave(torch.arange(B, device=dev), torch.tensor(lengths, device=dev)) * width + local
        rotary = self._rotary(local + start)
        x = self.decoder.embed_tokens(flat).float()
        # token-major (B * width) buffers of the suffix attention's q, k, v, reused by every
        # layer: each layer overwrites the real slots, and the padding slots stay zero
        buffers = [x.new_zeros(B * width, heads, D) for heads in (H, Hkv, Hkv)]
        for i, layer in enumerate(self.decoder.layers):
            attn = layer.self_attn
            q, k, v = self._qkv(layer.input_layernorm(x), attn, rotary)
            # 1) each sample causally against its own suffix, right-padded: a real query never
            #    sees a padded key, since padding only follows it
            padded = []
            for t, buf in zip((q, k, v), buffers):
                buf[slot] = t[0].transpose(0, 1)
                padded.append(buf.view(B, width, *buf.shape[1:]).transpose(1, 2))
            o_s, lse_s = _attention(*padded, causal=True)
            o = o_s.float().transpose(1, 2).reshape(B * width, H, D)[slot]  # (T, H, D)
            if prefix_kv is not None:
                # 2) every query against the shared prefix in one call, merged through the log-sum-exp
                kp, vp = prefix_kv[i]
                o_p, lse_p = _attention(q, kp, vp, causal=False)
                lse_s = lse_s.transpose(1, 2).reshape(B * width, H)[slot]  # (T, H)
                lse_p = lse_p[0].transpose(0, 1)  # (T, H)
                # the prefix's share of the softmax mass, exp(lse_p) / (exp(lse_p) + exp(lse_s))
                o = torch.lerp(o, o_p.float()[0].transpose(0, 1), torch.sigmoid(lse_p - lse_s)[..., None])
            x += self._dense(o.reshape(T, H * D), attn.o_proj).float()
            x += self._mlp(layer.post_attention_layernorm(x), layer.mlp)
        return self.decoder.norm(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of hidden rows ``h``."""
        with self._strict():
            return self._dense(h, self.lm_head).float()
