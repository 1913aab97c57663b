"""A packed, padding-free forward pass for Llama-family decoders on the CPU, built for RDS scoring.

The generic engine path runs the Hugging Face forward on right-padded batches with the shared
prefix's KV cache expanded to every row. This path computes the same numbers with less work:
- the suffix tokens of a batch are packed into one (tokens x hidden) matrix, so every linear
  layer multiplies only real tokens (no padding rows), in large, efficient matmuls;
- attention is one softmax over two kinds of keys (:func:`_suffix_prefix_attention`): the
  shared prefix, whose scores for ALL the batch's queries come from one matmul per key head
  against the un-replicated prefix keys (the grouped-query heads of a key head stacked as
  rows: no ``repeat_kv`` copy), and each sample's own suffix, causally, in batched matmuls
  over right-padded rows (a real query never sees a padded key: padding sits only after it),
  cut into row blocks that skip most of the causal mask's empty upper triangle;
- on the CPU every linear layer, the prefix attention's two matmuls and the LM head run
  oneDNN's inner product on weights reordered once into its blocked layout
  (:func:`_onednn_linear_op`); on AMD processors this measured 2.3x MKL's float32 GEMM, which
  ``F.linear`` (and the CPU flash-attention kernel) would use;
- a prefix is computed once per system prompt and kept (:class:`PrefixKV`); another prompt
  that begins with the same tokens (the unsafe prompt starts with the role profile) reuses
  them; in the last layer only the rows that predict answer tokens are finished;
- the precision is a policy (see :class:`PackedLlama`): IEEE ``float32`` everywhere (exact), or
  ``bfloat16`` weights and matmul inputs (the fast mode's screen); the residual stream, norms,
  attention and the final log-softmax stay float32 in both.

It reuses the model's own modules (norms, rotary embedding tables); the matmul weights are copied once,
into oneDNN's layout (at most PREPACK_MAX_BYTES of float32 copies; beyond that the model's own
weights are used as they are). Only architectures whose forward is exactly "Llama" are accepted
(:func:`supports`); everything else goes through the generic path.
"""
from __future__ import annotations

import math
import os
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


def attention_reference(q, k, v, visible):
    """softmax(q k^T / sqrt(D)) v written out in float64, the yardstick in tests.

    q (B, H, L, D), k/v (B, Hkv, S, D) with H a multiple of Hkv (query head h reads key head
    h // (H / Hkv)); ``visible`` (L, S) or (B, L, S) bool: which keys each query sees.
    """
    group = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(group, dim=1), v.double().repeat_interleave(group, dim=1)
    s = (q.double() @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = visible if visible.dim() == 2 else visible[:, None]
    return torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v


# attention scores are computed in base 2: queries carry log2(e) / sqrt(d), so that
# softmax(q k^T / sqrt(d)) = 2^(s - max) / sum; torch's exp2 measured 6x faster than exp here
# (0.1 vs 0.6 ns per element) at 1 ulp
_QK_SCALE = 1.0 / math.log(2.0)


def _causal_mask(width: int, rep: int, device) -> torch.Tensor:
    """Additive (width * rep, width) mask: query row w * rep + j (head j of a key group) sees keys 0..w."""
    w = torch.arange(width, device=device)
    blocked = (w[None, :] > w[:, None]).repeat_interleave(rep, 0)
    return torch.zeros(blocked.shape, device=device).masked_fill_(blocked, float("-inf"))


def _rope(x, cos, sin):
    """Rotary embedding of x (T, heads, D) with the tables of :meth:`PackedLlama._rotary`:
    x * cos + rotate_half(x) * sin, where rotate_half(x) = (-x2, x1) = roll(x, D/2) * (-1, 1)."""
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, -1), sin)


def _linear(x, w, op):
    return op(x, w, None, "none", [], "") if op is not None else F.linear(x, w)


# suffix query rows are cut into blocks of about this many positions: a block needs only the
# keys up to its last row, so the batched matmuls skip most of the causal mask's upper triangle
# (two blocks do 3/4 of the full square's work, four 5/8)
SUFFIX_BLOCK_ROWS = 24


def _row_blocks(width: int) -> list[tuple[int, int]]:
    n = max(1, min(8, round(width / SUFFIX_BLOCK_ROWS)))
    edges = [round(width * i / n) for i in range(n + 1)]
    return list(zip(edges, edges[1:]))


def _suffix_prefix_attention(q, k, v, causal, batch: int, width: int, prefix, op):
    """Attention output (G, batch * width * rep, D), float32, of right-padded suffixes that
    follow a shared prefix.

    q (G, batch * width, rep * D): the queries of key head g's ``rep`` query heads, pre-scaled
    by log2(e) / sqrt(D); k, v (G, batch * width, D); sample after sample, ``width`` rows each.
    ``causal``: the additive (width * rep, width) mask of :func:`_causal_mask`.
    ``prefix``: per key head the (keys, values^T) matmul weights of the shared prefix, or None.

    Each query attends to the whole prefix and causally to its own suffix in ONE softmax (base
    2): the prefix scores are one matmul per key head over all the batch's queries against the
    un-replicated prefix keys; the suffix scores batched matmuls over samples and key heads,
    block by block of query rows (a block sees the keys up to its last row).
    """
    G, D = q.shape[0], k.shape[-1]
    rep = q.shape[-1] // D
    rows = batch * width * rep
    qs = q.view(G * batch, width, rep * D)
    ks, vs = k.view(G * batch, width, D), v.view(G * batch, width, D)
    blocks = _row_blocks(width)
    scores = []  # per row block: (G * B, block rows * rep, keys up to the block's end)
    for lo, hi in blocks:
        s = torch.bmm(qs[:, lo:hi].view(G * batch, (hi - lo) * rep, D), ks[:, :hi].transpose(1, 2))
        scores.append(s.add_(causal[lo * rep : hi * rep, :hi]))
    m = torch.cat([s.amax(-1) for s in scores], 1).view(G, rows)  # every row's maximum score
    prefix_scores = [_linear(q[g].view(rows, D), keys, op) for g, (keys, _) in enumerate(prefix)] if prefix else []  # (B * W * rep, P)
    for g, sp in enumerate(prefix_scores):
        torch.maximum(m[g], sp.amax(-1), out=m[g])
    for g, sp in enumerate(prefix_scores):
        sp.sub_(m[g][:, None]).exp2_()
    m = m.view(G * batch, width * rep)
    totals, outs = [], []
    for (lo, hi), s in zip(blocks, scores):
        s.sub_(m[:, lo * rep : hi * rep, None]).exp2_()
        totals.append(s.sum(-1))
        outs.append(torch.bmm(s, vs[:, :hi]))
    total = torch.cat(totals, 1).view(G, rows)
    o = torch.cat(outs, 1).view(G, rows, D)
    for g, sp in enumerate(prefix_scores):
        total[g] += sp.sum(-1)
        o[g] += _linear(sp, prefix[g][1], op)
    return o.div_(total[..., None])


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


class PrefixKV:
    """The keys and values of a shared prefix, every layer: ``raw`` (k, v) pairs, each
    (Hkv, P, D) float32 post-RoPE, and per key head the matmul ``weights`` of
    :meth:`PackedLlama._prefix_weights`."""

    def __init__(self, ids: Sequence[int], raw: list, weights: list):
        self.ids, self.raw, self.weights = list(ids), raw, weights

    def __len__(self) -> int:
        return len(self.ids)

    def common_length(self, ids: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self.ids, ids):
            if a != b:
                break
            n += 1
        return n

    def head(self, n: int, runner: "PackedLlama", reorder: bool = True) -> "PrefixKV":
        """The prefix of the first ``n`` tokens (itself when that is all of it). ``reorder``:
        lay its weights out for oneDNN (worth it for a prefix that serves a pass's batches, not
        for one that only serves to compute a longer prefix)."""
        if n == len(self.ids):
            return self
        raw = [(k[:, :n].contiguous(), v[:, :n].contiguous()) for k, v in self.raw]
        return PrefixKV(self.ids[:n], raw, [runner._prefix_weights(k, v, reorder) for k, v in raw])


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
        """(cos, sin) tables (T, 1, D) of the rotary embedding at ``positions``, for :func:`_rope`:
        computed once for all layers by the model's own rotary module (so any RoPE scaling it
        applies is kept); sin's first half is negated."""
        probe = torch.empty(0, dtype=torch.float32, device=self.device)
        cos, sin = self.decoder.rotary_emb(probe, positions[None, :])
        half = sin.shape[-1] // 2
        sin = torch.cat([-sin[..., :half], sin[..., half:]], -1)
        return cos[0, :, None].float(), sin[0, :, None].float()

    def _qkv(self, h, attn, rot_q, rot_k):
        """Post-RoPE q (T, H, D), k and v (T, Hkv, D), token-major."""
        T = h.shape[0]
        q = _rope(self._dense(h, attn.q_proj).float().view(T, self.heads, self.head_dim), *rot_q)
        k = _rope(self._dense(h, attn.k_proj).float().view(T, self.kv_heads, self.head_dim), *rot_k)
        v = self._dense(h, attn.v_proj).float().view(T, self.kv_heads, self.head_dim)
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
    def prefix(self, ids: Sequence[int], base: "PrefixKV | None" = None):
        """The :class:`PrefixKV` of a shared prefix ``ids``, or None when empty.

        ``base``: a prefix computed before (another pass's system prompt, say); the tokens it
        shares with ``ids`` are reused, not recomputed (causal attention: a token's keys and
        values do not depend on what follows it), and only the rest runs through the model.
        """
        if not ids:
            return None
        reused = base.common_length(ids) if base is not None else 0
        with self._strict():
            if reused == len(ids):
                return base.head(reused, self)
            start = base.head(reused, self, reorder=False) if reused else None
            new: list = []
            self._hidden([list(ids[reused:])], start, reused, collect=new)
            raw = [
                (torch.cat([start.raw[i][0], k], 1), torch.cat([start.raw[i][1], v], 1)) if start is not None else (k, v)
                for i, (k, v) in enumerate(new)
            ]
            return PrefixKV(list(ids), raw, [self._prefix_weights(k, v) for k, v in raw])

    def _prefix_weights(self, k, v, reorder: bool = True):
        """Per key head, the prefix keys (P, D) and values transposed (D, P) as matmul weights:
        queries @ keys^T and probabilities @ values become two linear layers (on the CPU
        reordered once for oneDNN)."""
        pairs = []
        for g in range(k.shape[0]):
            kw, vw = k[g].contiguous(), v[g].t().contiguous()
            if reorder and self._op is not None:
                kw = torch.ops.mkldnn._reorder_linear_weight(kw, 2048)
                vw = torch.ops.mkldnn._reorder_linear_weight(vw, 2048)
            pairs.append((kw, vw))
        return pairs

    # -- packed suffixes ----------------------------------------------------------------------
    @torch.no_grad()
    def hidden(self, suffixes: Sequence[Sequence[int]], prefix: "PrefixKV | None", start: int, rows=None) -> torch.Tensor:
        """Final-norm hidden states of the suffix tokens, packed in order: (sum of lengths,
        hidden), or only the packed ``rows`` asked for (an index tensor); the last layer then
        finishes only those rows (its keys and values still come from every token)."""
        with self._strict():
            return self._hidden(suffixes, prefix, start, rows)

    def _hidden(self, suffixes: Sequence[Sequence[int]], prefix: "PrefixKV | None", start: int, rows=None, collect=None) -> torch.Tensor:
        """:meth:`hidden`; with ``collect`` (a list) it instead gathers every layer's post-RoPE
        keys and values (Hkv, tokens, D) of a single suffix, which is how prefixes are computed,
        and stops once the last layer's are in (nothing after them is needed)."""
        dev = self.device
        lengths = [len(s) for s in suffixes]
        T, B, width = sum(lengths), len(lengths), max(lengths)
        H, Hkv, D = self.heads, self.kv_heads, self.head_dim
        rep = H // Hkv
        flat = torch.tensor([t for s in suffixes for t in s], device=dev)
        local = torch.cat([torch.arange(n, device=dev) for n in lengths])
        # where each packed token sits in the (B * width) right-padded layout of the attention
        slot = torch.repeat_interleave(torch.arange(B, device=dev), torch.tensor(lengths, device=dev)) * width + local
        # queries carry the score scale (see _QK_SCALE)
        rot_k = self._rotary(local + start)
        rot_q = tuple(t * (_QK_SCALE / math.sqrt(D)) for t in rot_k)
        x = self.decoder.embed_tokens(flat).float()
        # group-major padded buffers reused by every layer: each layer overwrites the real
        # slots; padding slots stay zero (a padded key is never seen by a real query)
        qbuf = x.new_zeros(Hkv, B * width, rep * D)
        kbuf = x.new_zeros(Hkv, B * width, D)
        vbuf = x.new_zeros(Hkv, B * width, D)
        # packed (token t, key head g) -> row of the flattened buffers
        where = (slot[:, None] + torch.arange(Hkv, device=dev)[None, :] * (B * width)).reshape(-1)
        # query row (w, j) of a sample sees its own suffix keys 0..w
        causal = _causal_mask(width, rep, dev)
        for i, layer in enumerate(self.decoder.layers):
            attn = layer.self_attn
            q, k, v = self._qkv(layer.input_layernorm(x), attn, rot_q, rot_k)
            if collect is not None:
                collect.append((k.transpose(0, 1).contiguous(), v.transpose(0, 1).contiguous()))
                if i == len(self.decoder.layers) - 1:
                    return x[:0]
            qbuf.view(-1, rep * D).index_copy_(0, where, q.view(T * Hkv, rep * D))
            kbuf.view(-1, D).index_copy_(0, where, k.view(T * Hkv, D))
            vbuf.view(-1, D).index_copy_(0, where, v.view(T * Hkv, D))
            o = _suffix_prefix_attention(qbuf, kbuf, vbuf, causal, B, width, prefix.weights[i] if prefix is not None else None, self._op)
            o = o.view(-1, rep * D).index_select(0, where).view(T, H * D)
            if rows is not None and i == len(self.decoder.layers) - 1:
                o, x = o[rows], x[rows]
            x += self._dense(o, attn.o_proj).float()
            x += self._mlp(layer.post_attention_layernorm(x), layer.mlp)
        return self.decoder.norm(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of hidden rows ``h``."""
        with self._strict():
            return self._dense(h, self.lm_head).float()
