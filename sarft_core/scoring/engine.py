"""The RDS scoring engine: log p(y|x) of every sample under several system prompts, fast.

What makes it fast (and why each step is exact):
- every sample of a role shares the system-prompt prefix, so its KV cache is computed once
  per prompt and reused for all samples (causal attention: the prefix never sees the suffix);
- the suffixes (user turn + answer) are sorted by length and batched under a token budget;
- Llama-family models (Llama, Mistral without sliding window, Qwen2, SmolLM) on the CPU run a packed,
  padding-free forward (:mod:`sarft_core.scoring.packed`): linear layers see only real tokens,
  each query attends to the un-replicated prefix keys and to its own suffix in one softmax,
  a prefix reuses the leading tokens it shares with another pass's (the unsafe prompt begins
  with the role profile), and the last layer finishes only the rows that predict answer
  tokens; other models run the Hugging Face forward on right-padded batches with the prefix
  cache expanded (padding is never attended to by real tokens);
- the LM head runs only on the positions that predict answer tokens: no full-vocabulary
  log-softmax over prompt tokens.
The answer tokens are identical under every system prompt; only the prefix changes.
"""
from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from sarft_core.chat import MAX_ANSWER_TOKENS, MAX_PROMPT_TOKENS, encode

ProgressFn = Callable[[int, int], None]


class Cancelled(Exception):
    """Raised when the caller's ``should_stop`` asks the engine to stop between batches."""


@dataclass
class PassResult:
    """Per-sample answer-token log-probabilities under one system prompt."""

    token_logps: list[list[float]]  # one list per sample, one entry per answer token


@dataclass
class EncodedSet:
    answer_ids: list[list[int]]
    prompt_ids: dict[str, list[list[int]]]  # pass name -> per-sample prompt ids
    prompt_truncated: list[bool] = field(default_factory=list)
    answer_truncated: list[bool] = field(default_factory=list)


def encode_passes(tokenizer, systems: dict[str, str], samples, max_prompt_tokens=MAX_PROMPT_TOKENS, max_answer_tokens=MAX_ANSWER_TOKENS) -> EncodedSet:
    prompt_ids: dict[str, list[list[int]]] = {}
    answer_ids: list[list[int]] = []
    p_trunc = [False] * len(samples)
    a_trunc: list[bool] = []
    for name, system in systems.items():
        rows = []
        for i, s in enumerate(samples):
            e = encode(tokenizer, system, s.input, s.output, max_prompt_tokens, max_answer_tokens)
            rows.append(e.prompt_ids)
            p_trunc[i] = p_trunc[i] or e.prompt_truncated
            if len(answer_ids) < len(samples):
                answer_ids.append(e.answer_ids)
                a_trunc.append(e.answer_truncated)
        prompt_ids[name] = rows
    return EncodedSet(answer_ids, prompt_ids, p_trunc, a_trunc)


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by all sequences."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        limit = min(n, len(s))
        while i < limit and s[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int = 64) -> list[list[int]]:
    """Group sample indices, longest first, so that batch_size * longest <= max_batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * width > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _decoder_and_head(model):
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    head = model.get_output_embeddings()
    return decoder, head


def _final_logit_transform(model):
    cap = getattr(model.config, "final_logit_softcapping", None)
    scale = getattr(model.config, "logit_scale", None)

    def transform(logits):
        if scale:
            logits = logits * scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def answer_token_logps(hidden: torch.Tensor, targets: torch.Tensor, head, transform, chunk_rows: int = 1024) -> torch.Tensor:
    """log p(target) for each row of ``hidden`` (rows x d), via the LM head on those rows only.

    The log-softmax overwrites each block of logits in place (no second rows x vocab tensor).
    """
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_rows):
        h = hidden[start : start + chunk_rows]
        logits = transform(head(h)).float()
        t = targets[start : start + chunk_rows]
        logp = torch._log_softmax(logits, -1, False, out=logits)
        out[start : start + chunk_rows] = logp.gather(1, t[:, None]).squeeze(1)
    return out


# rows per LM-head block on the packed CPU path: 128 rows x 49k vocabulary (25 MB of logits)
# measured fastest here, head and log-softmax together (432 GFLOP/s; 64 rows 419, 256 to 1024
# rows about 360)
PACKED_HEAD_ROWS = 128


def cache_kwarg(model) -> str:
    """The keyword a model's forward takes its KV cache under: ``cache`` in transformers 5.x
    (where ``past_key_values`` is deprecated and goes away in 5.40), ``past_key_values`` in the
    4.x releases requirements.txt still allows and in remote code written for them."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    """The KV cache a forward returned, read from the field the output class declares (``cache``
    in transformers 5.x; reading ``past_key_values`` there warns of its removal)."""
    fields = getattr(out, "__dataclass_fields__", None) or {}
    return out.cache if "cache" in fields else out.past_key_values


@torch.no_grad()
def prefix_cache(model, prefix_ids: list[int]):
    """Per-layer (key, value) tensors of a prefix, batch dimension 1."""
    device = next(model.parameters()).device
    if not prefix_ids:
        return None
    decoder, _ = _decoder_and_head(model)
    out = decoder(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True)
    cache = output_cache(out)
    return [(layer.keys, layer.values) for layer in cache.layers]


def _expanded_cache(model, kv, batch: int):
    from transformers import DynamicCache

    if kv is None:
        return None
    return DynamicCache([(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv], config=model.config)


_PACKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def packed_runner(model, precision: str = "float32"):
    """The padding-free Llama-family forward for ``model`` (cached per model and precision), or None."""
    from sarft_core.scoring.packed import PackedLlama, supports

    if _PACKED_DISABLED or not supports(model):
        return None
    per_model = _PACKED.setdefault(model, {})
    if precision not in per_model:
        per_model[precision] = PackedLlama(model, precision)
    return per_model[precision]


def forget_weights(model) -> None:
    """Drop the packed forward's copies of ``model``'s weights (after the weights were changed in
    place, e.g. shifted along a gradient), so that the next pass reads the weights as they are."""
    _PACKED.pop(model, None)


# set SARFT_PACKED=0 to force the generic Hugging Face path (for comparisons and debugging)
_PACKED_DISABLED = os.environ.get("SARFT_PACKED", "1") == "0"


def _answer_rows(batch, row_lengths, starts, answer_ids):
    """Flat row index of every position that predicts an answer token, and those tokens.

    The batch's hidden states are rows laid end to end, sample ``i`` taking ``row_lengths[i]``
    of them (its suffix length when packed, the batch width when padded).
    """
    rows, targets, offset = [], [], 0
    for i in batch:
        a = len(answer_ids[i])
        rows.extend(range(offset + starts[i], offset + starts[i] + a))
        targets.extend(answer_ids[i])
        offset += row_lengths[i]
    return rows, targets


@dataclass
class _PassWork:
    """One pass made ready to run: its prefix cache and its suffix batches."""

    kv: object
    shared: int
    suffixes: list[list[int]]
    starts: list[int]
    lengths: list[int]
    batches: list[list[int]]


def _prepare_pass(model, packed, prompt_ids, answer_ids, max_batch_tokens, prefix_kv_cache, precision, others=()) -> _PassWork:
    """Find or compute (and keep in ``prefix_kv_cache``) the pass's prefix cache and plan its
    suffix batches. On the packed path a new prefix reuses the longest run of leading tokens it
    shares with a prefix already in ``prefix_kv_cache`` or the ``others`` caches (the unsafe
    prompt begins with the role profile, for one)."""
    # never swallow a whole prompt into the prefix: the last prompt token predicts answer token 0
    shared = min(common_prefix_len(prompt_ids), min(len(p) for p in prompt_ids) - 1)
    shared = max(shared, 0)
    mode = ("packed", precision) if packed is not None else ("hf",)
    ids = prompt_ids[0][:shared]
    key = mode + tuple(ids)
    if key in prefix_kv_cache:
        kv = prefix_kv_cache[key]
    elif packed is not None:
        bases = [v for cache in (prefix_kv_cache, *others) for k, v in cache.items() if k[: len(mode)] == mode and v is not None]
        base = max(bases, key=lambda b: b.common_length(ids), default=None)
        kv = packed.prefix(ids, base)
    else:
        kv = prefix_cache(model, ids)
    prefix_kv_cache[key] = kv
    # the suffix fed to the model: rest of the prompt + all answer tokens but the last
    suffixes = [p[shared:] + a[:-1] for p, a in zip(prompt_ids, answer_ids)]
    starts = [len(p) - shared - 1 for p in prompt_ids]  # position predicting answer token 0
    lengths = [len(x) for x in suffixes]
    return _PassWork(kv, shared, suffixes, starts, lengths, plan_batches(lengths, max_batch_tokens))


def scoring_workers(model, items: int, precision: str = "float32") -> int:
    """How many single-threaded workers run the batches: on the packed CPU path one per core
    (measured about 5% faster here than one worker on all cores: fewer thread barriers in the
    small attention and elementwise ops), else 1. ``SARFT_SCORING_WORKERS`` overrides."""
    packed = packed_runner(model, precision)
    if packed is None or packed.device.type != "cpu":
        return 1
    wanted = int(os.environ.get("SARFT_SCORING_WORKERS", "0")) or torch.get_num_threads()
    return max(1, min(wanted, items))


@torch.no_grad()
def score_passes(
    model,
    prompt_ids: dict[str, list[list[int]]],
    answer_ids: list[list[int]],
    pad_id: int,
    max_batch_tokens: int = 4096,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    prefix_kv_caches: dict[str, dict] | None = None,
    precision: str = "float32",
    on_sample: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> dict[str, PassResult]:
    """Answer-token log-probs of each sample under each system prompt (pass name -> prompt ids).

    Llama-family models run the packed forward (:mod:`sarft_core.scoring.packed`) at the
    given ``precision``; any other causal LM runs the Hugging Face forward on right-padded
    batches with the prefix cache expanded (``precision`` is then the model's own). On the
    packed CPU path the batches of all passes go to a pool of single-threaded workers; the
    results do not depend on how many (one worker on several threads may differ in the last
    bits: oneDNN can split a small matmul's sum across threads). ``progress(done, total)``
    counts samples x passes and is called from this thread, which also polls ``should_stop``
    between batches. ``on_sample(i, {pass: token log-probs})`` is called, from this thread, as
    soon as sample ``i`` has all its passes (so that a caller can keep finished samples even if
    the call is cancelled later).
    """
    packed = packed_runner(model, precision)
    device = packed.device if packed is not None else next(model.parameters()).device
    n = len(answer_ids)
    # prefix caches per pass (kept by the caller across calls, or only for this call): each
    # pass's prefix may reuse the leading tokens of the others'
    caches = prefix_kv_caches if prefix_kv_caches is not None else {}
    work = {}
    for name, prompts in prompt_ids.items():
        mine = caches.setdefault(name, {})
        work[name] = _prepare_pass(model, packed, prompts, answer_ids, max_batch_tokens, mine, precision,
                                   [c for c in caches.values() if c is not mine])
    # longest batches first, across passes, so that the pool ends evenly
    items = sorted(((name, batch) for name, w in work.items() for batch in w.batches), key=lambda it: -max(work[it[0]].lengths[i] for i in it[1]) * len(it[1]))
    results: dict[str, list] = {name: [None] * n for name in work}
    generic = None if packed is not None else (*_decoder_and_head(model), _final_logit_transform(model))

    def run(item) -> list[float]:
        name, batch = item
        w = work[name]
        if packed is None:
            return _hf_batch_logps(model, *generic, w.kv, batch, w.suffixes, w.starts, answer_ids, pad_id, w.shared, device)
        rows, targets = _answer_rows(batch, w.lengths, w.starts, answer_ids)
        picked = packed.hidden([w.suffixes[i] for i in batch], w.kv, w.shared, torch.tensor(rows, device=device))
        return answer_token_logps(picked, torch.tensor(targets, device=device), packed.head, lambda x: x, PACKED_HEAD_ROWS).cpu().tolist()

    done = 0
    total = n * len(work)

    missing = [len(work)] * n  # passes each sample still waits for

    def store(item, logps) -> None:
        nonlocal done
        name, batch = item
        offset = 0
        for i in batch:
            a = len(answer_ids[i])
            results[name][i] = logps[offset : offset + a]
            offset += a
            missing[i] -= 1
            if missing[i] == 0 and on_sample is not None:
                on_sample(i, {p: results[p][i] for p in work})
        done += len(batch)
        if progress is not None:
            progress(done, total)

    workers = scoring_workers(model, len(items), precision)
    if workers <= 1:
        for item in items:
            if should_stop is not None and should_stop():
                raise Cancelled()
            store(item, run(item))
    else:
        _run_pool(items, run, store, workers, should_stop, packed)
    return {name: PassResult(token_logps=results[name]) for name in work}


def _run_pool(items, run, store, workers: int, should_stop, packed) -> None:
    """Run ``items`` (in their order) on ``workers`` threads of one intra-op thread each (the
    cores split between them); results are stored, and progress reported, on the calling thread.
    The first error, or a stop request, cancels what has not started and is raised here."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    threads_before = torch.get_num_threads()
    per_worker = max(1, threads_before // workers)
    error: BaseException | None = None
    # one IEEE-float32 scope around the whole pool (the workers' own scopes nest inside it)
    with packed._strict():
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rds-worker",
                                  initializer=torch.set_num_threads, initargs=(per_worker,))
        try:
            pending = {pool.submit(run, item): item for item in items}
            while pending and error is None:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        error = error or exc
                    elif error is None:
                        store(item, fut.result())
                if error is None and should_stop is not None and should_stop():
                    error = Cancelled()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            # torch.set_num_threads in a worker also sets MKL's process-wide count: restore it
            torch.set_num_threads(threads_before)
    if error is not None:
        raise error


def score_pass(
    model,
    prompt_ids: list[list[int]],
    answer_ids: list[list[int]],
    pad_id: int,
    max_batch_tokens: int = 4096,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    prefix_kv_cache: dict | None = None,
    precision: str = "float32",
) -> PassResult:
    """Answer-token log-probs of each sample under one system prompt (its prompt ids given):
    :func:`score_passes` with a single pass."""
    caches = {"pass": prefix_kv_cache} if prefix_kv_cache is not None else None
    return score_passes(model, {"pass": prompt_ids}, answer_ids, pad_id, max_batch_tokens, progress, should_stop, caches, precision)["pass"]


def _hf_batch_logps(model, decoder, head, transform, kv, batch, suffixes, starts, answer_ids, pad_id, shared, device) -> list[float]:
    """The generic path: one right-padded batch through the Hugging Face decoder."""
    width = max(len(suffixes[i]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    for row, i in enumerate(batch):
        ids[row, : len(suffixes[i])] = torch.tensor(suffixes[i])
    ids = ids.to(device)
    positions = torch.arange(shared, shared + width, device=device).unsqueeze(0).expand(len(batch), -1)
    hidden = decoder(
        input_ids=ids,
        position_ids=positions,
        use_cache=kv is not None,
        **{cache_kwarg(decoder): _expanded_cache(model, kv, len(batch))},
    ).last_hidden_state
    rows, targets = _answer_rows(batch, {i: width for i in batch}, starts, answer_ids)
    picked = hidden.reshape(-1, hidden.shape[-1])[torch.tensor(rows, device=device)]
    return answer_token_logps(picked, torch.tensor(targets, device=device), head, transform).cpu().tolist()


def reduce_logps(token_logps: Sequence[float], normalise: str = "mean") -> float:
    if not token_logps:
        return math.nan
    total = float(sum(token_logps))
    return total / len(token_logps) if normalise == "mean" else total
