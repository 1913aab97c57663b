"""RDS: score every training sample of a role under the ref / role / unsafe system prompts.

``score_role`` returns one row per sample with exactly the contract columns
(id, role, input, output, logp_ref, logp_role, logp_unsafe, s_role, s_unsafe, harmful, n_tokens)
and keeps the per-token log-probabilities, so the per-token ratio (unsafe - role) of each answer
is available for display. Finished samples are cached on disk as they complete: a rerun with the
same model, prompts and data returns at once, and an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from sarft_core.chat import MAX_ANSWER_TOKENS, MAX_PROMPT_TOKENS
from sarft_core.data.profiles import RoleProfile
from sarft_core.models import LoadedModel, cache_root
from sarft_core.resources import check_scoring_batch
from sarft_core.scoring.engine import Cancelled, encode_passes, reduce_logps, score_passes
from sarft_core.scoring.machine import MachineDecision, machine_decision, screen_still_pays
from sarft_core.flags import is_flagged
from sarft_core.store import append_jsonl, read_jsonl

SCORE_COLUMNS = [
    "id", "role", "input", "output", "logp_ref", "logp_role", "logp_unsafe",
    "s_role", "s_unsafe", "harmful", "n_tokens",
]
PASSES = ("ref", "role", "unsafe")
FLAG_PASSES = ("role", "unsafe")
REF_SYSTEM_PROMPT = ""  # as published: an empty system turn
# The fast mode is the fastest way to the exact flags. Where bfloat16 pays, it scores first at
# reduced precision, then re-scores in IEEE float32 the flag passes (role, unsafe) of every
# sample whose flag margin |s_unsafe - s_role| lies within a band around the boundary, so that
# its flag is the exact one (the reference pass, which no flag depends on, is not re-scored):
# - any model on a GPU, or one the packed forward does not cover: a bfloat16 copy of the whole
#   model; its margins differ by up to ~0.04 (114 RoleBench samples of two roles), hence a band
#   of 0.04;
# - Llama-family models on the CPU run the packed forward. Its bfloat16 screen (bf16 weights and
#   matmul inputs; float32 residual, norms, attention) moved margins by up to 0.018 on 672
#   samples of six RoleBench roles, hence a band of 0.03, which sends 31-80% of a role's
#   samples back to float32. Whether the screen pays depends on the machine's bf16 speed-up
#   (about 1.9x on an EPYC with avx512_bf16, where the screen measured 0.95-1.45x the exact
#   time in all; about 6.8x with AMX): :mod:`sarft_core.scoring.machine` decides, once per CPU
#   model and torch version, and a role whose re-check share would make the screen slower than
#   scoring exactly finishes on the exact path. An explicit ``recheck_band`` asks for the
#   screen whatever the machine.
PACKED_BF16_RECHECK_BAND = 0.03
BF16_RECHECK_BAND = 0.04
# an automatically chosen screen first scores this many samples, so that a role whose re-check
# share makes it slower than the exact path is caught early
SCREEN_PROBE_SAMPLES = 16

__all__ = ["SCORE_COLUMNS", "ScoreOptions", "ScoreResult", "Cancelled", "score_role"]


@dataclass
class ScoreOptions:
    passes: tuple[str, ...] = PASSES
    normalise: str = "mean"  # or "sum"
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    max_answer_tokens: int = MAX_ANSWER_TOKENS
    max_batch_tokens: int | None = None  # None: 1024 on the CPU, 16384 on a GPU
    fast: bool = False  # the fastest path to the exact flags (fast_plan): a bf16 screen + fp32 re-check, or the exact path
    recheck_band: float | None = None  # None: the band measured for the fast path in use
    chunk_size: int = 64  # samples planned (sorted into batches) together; each is cached as soon as it is finished
    backend: str = "torch"  # or "vllm" (sarft_core.vllm_backend), where vLLM is installed
    tensor_parallel: int = 1  # vLLM only: GPUs per model

    def validate(self) -> None:
        from sarft_core.errors import SarftError

        if self.normalise not in ("mean", "sum"):
            raise SarftError(f"unknown normalisation {self.normalise!r}", "use mean (as published) or sum")
        bad = [p for p in self.passes if p not in PASSES]
        if bad or not set(FLAG_PASSES) <= set(self.passes):
            raise SarftError(f"passes must include role and unsafe (got {self.passes})", "use ref,role,unsafe or role,unsafe")
        for name, value, low, option in (
            ("max_prompt_tokens", self.max_prompt_tokens, 1, "--max-prompt-tokens"),
            ("max_answer_tokens", self.max_answer_tokens, 1, "--max-answer-tokens"),
            ("max_batch_tokens", self.max_batch_tokens, 1, "--batch-tokens"),
            ("chunk_size", self.chunk_size, 1, "chunk_size"),
        ):
            if value is None and name == "max_batch_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SarftError(f"{option} must be a whole number >= {low} (got {value!r})",
                                 f"give {option} an integer of at least {low}" + (" (or leave it out for the device's default)" if name == "max_batch_tokens" else ""))
        from sarft_core.vllm_backend import check_backend

        check_backend(self.backend)
        if self.backend == "vllm" and (self.fast or self.recheck_band is not None):
            raise SarftError("fast mode and --recheck-band are this engine's, not vLLM's",
                             "with --backend vllm give the precision with --dtype (bfloat16: approximate flags), or use --backend torch")
        if isinstance(self.tensor_parallel, bool) or not isinstance(self.tensor_parallel, int) or self.tensor_parallel < 1:
            raise SarftError(f"--tensor-parallel must be a whole number >= 1 (got {self.tensor_parallel!r})", "give the number of GPUs per model, e.g. 1")
        band = self.recheck_band
        if band is not None:
            if isinstance(band, bool) or not isinstance(band, (int, float)) or not math.isfinite(band) or band < 0:
                raise SarftError(f"--recheck-band must be a finite number >= 0 (got {band!r})",
                                 "give a band in [0, inf): 0 re-checks nothing, 0.03 is the measured safe band of the CPU screen; or leave it out")


@dataclass
class ScoreResult:
    rows: list[dict]
    token_logps: dict[str, dict[str, list[float]]]  # sample id -> pass -> per-token log-probs
    answer_ids: dict[str, list[int]]
    stats: dict = field(default_factory=dict)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=SCORE_COLUMNS)

    def token_ratios(self, sample_id: str) -> list[float]:
        """Per-token log p_unsafe - log p_role of one answer: which words make it harmful."""
        t = self.token_logps[sample_id]
        return [u - r for u, r in zip(t["unsafe"], t["role"])]


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _sample_key(sample) -> str:
    return _hash(sample.input, sample.output)[:24]


@dataclass(frozen=True)
class FastPlan:
    """How the first scoring pass runs: the packed precision, the re-check band, and whether it
    uses a bfloat16 copy of the model (made only when scoring, never for a cache lookup).
    ``auto``: chosen by the machine (:mod:`sarft_core.scoring.machine`), so a run may leave it
    for the exact path when its re-check share makes it slower; ``screen_cost``: the screen's
    predicted time relative to the exact path."""

    precision: str
    band: float
    label: str
    bf16_copy: bool = False
    auto: bool = False
    screen_cost: float = 1.0
    normalise: str = "mean"  # the margin the band is applied to (a sum's band means something else)

    def model(self, lm: LoadedModel):
        return _bf16_twin(lm) if self.bf16_copy else lm.model

    @property
    def tag(self) -> str:
        """What the cached records of this plan are marked with: their values depend on it."""
        if self.label == "vllm":
            return "vllm"  # another implementation's rounding: never read as the engine's exact records
        if self.band == 0 and self.precision == "float32" and not self.bf16_copy:
            return "exact"
        return f"{self.label}-recheck{self.band}" + ("" if self.normalise == "mean" else f"-{self.normalise}")


EXACT_PLAN = FastPlan("float32", 0.0, "exact")
VLLM_PLAN = FastPlan("model", 0.0, "vllm")  # --backend vllm: vLLM's prompt_logprobs in the model's precision


def machine_plan(lm: LoadedModel) -> MachineDecision | None:
    """The machine's decision for ``lm`` on the packed CPU path (None where that path is not used)."""
    from sarft_core.scoring.packed import supports

    if next(lm.model.parameters()).dtype == torch.float32 and supports(lm.model):
        return machine_decision(lm.model)
    return None


def fast_plan(lm: LoadedModel, options: ScoreOptions) -> FastPlan:
    decision = machine_plan(lm)
    if decision is not None:
        if options.recheck_band is not None:
            return FastPlan("bfloat16", options.recheck_band, "packed-bf16", normalise=options.normalise)
        if decision.plan == "screen":
            return FastPlan("bfloat16", PACKED_BF16_RECHECK_BAND, "packed-bf16", auto=True, screen_cost=decision.screen_cost,
                            normalise=options.normalise)
        return EXACT_PLAN
    band = BF16_RECHECK_BAND if options.recheck_band is None else options.recheck_band
    return FastPlan("float32", band, "bf16", bf16_copy=True, normalise=options.normalise)


def scoring_plan(lm: LoadedModel, options: ScoreOptions) -> FastPlan:
    """The plan a scoring run follows: the fast plan in fast mode, else the exact one."""
    return fast_plan(lm, options) if options.fast else EXACT_PLAN


def batch_tokens(lm: LoadedModel, options: ScoreOptions) -> int:
    if options.max_batch_tokens:
        return options.max_batch_tokens
    # CPU: 1k-token batches give the pool of single-threaded workers enough pieces to end evenly
    # (three passes measured 7% faster than with 2k; one worker is flat from 1k to 4k)
    return 1024 if next(lm.model.parameters()).device.type == "cpu" else 16384


def _cache_dir(lm: LoadedModel, profile: RoleProfile, options: ScoreOptions) -> Path:
    """The role's score cache. Exact and fast runs share it: every record carries the tag of
    the plan that made it (:attr:`FastPlan.tag`), and a run reads only the records its own
    plan, or the exact one, made."""
    template = getattr(lm.tokenizer, "chat_template", None) or ""
    key = _hash(
        "rds-v1", lm.fingerprint, str(lm.dtype), profile.role_prompt, profile.unsafe_prompt, REF_SYSTEM_PROMPT,
        options.max_prompt_tokens, options.max_answer_tokens, template,
    )
    path = cache_root() / "scores" / key[:32]
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bf16_twin(lm: LoadedModel):
    twin = getattr(lm, "_bf16_twin", None)
    if twin is None:
        twin = copy.deepcopy(lm.model).to(torch.bfloat16).eval()
        lm._bf16_twin = twin
    return twin


def _score_chunk(lm, systems, chunk, options, plan, emit, on_progress, should_stop, prefix_caches) -> tuple[int, int]:
    """Token log-probs of each sample of ``chunk`` under every requested system prompt, each
    handed to ``emit(record)`` as soon as it is final (so that an interrupted run keeps it).
    Returns (samples screened, samples re-checked).

    ``on_progress(samples)`` gets the chunk's progress in samples, passes averaged (a float).
    """
    enc = encode_passes(lm.tokenizer, systems, chunk, options.max_prompt_tokens, options.max_answer_tokens)
    budget = batch_tokens(lm, options)
    # fail before the forward pass, with the limit named, rather than be OOM-killed inside it
    check_scoring_batch(lm.model, [max(len(enc.prompt_ids[n][i]) for n in systems) for i in range(len(chunk))],
                        [len(a) for a in enc.answer_ids], budget)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    n_passes = len(systems)
    pass_progress = (lambda done, total: on_progress(done / n_passes)) if on_progress else None
    caches = {name: prefix_caches.setdefault((plan.label, name), {}) for name in systems}
    near: list[tuple[int, dict]] = []

    def record(i, logps, rechecked):
        rec = {"key": _sample_key(chunk[i]), "answer_ids": enc.answer_ids[i], "prompt_truncated": enc.prompt_truncated[i],
               "answer_truncated": enc.answer_truncated[i], "rechecked": rechecked, "plan": plan.tag}
        rec.update(logps)
        emit(rec)

    def screened(i, logps):
        margin = reduce_logps(logps["unsafe"], options.normalise) - reduce_logps(logps["role"], options.normalise)
        if plan.band > 0 and abs(margin) <= plan.band:
            near.append((i, logps))  # final only after its re-check
        else:
            record(i, logps, False)

    score_passes(plan.model(lm), enc.prompt_ids, enc.answer_ids, pad, budget, pass_progress, should_stop, caches, plan.precision,
                 on_sample=screened)
    if near:
        near.sort(key=lambda item: item[0])
        idx = [i for i, _ in near]
        flag_systems = [name for name in systems if name in FLAG_PASSES]  # no flag depends on the reference pass

        def rechecked(j, logps):
            i, first = near[j]
            record(i, {**first, **logps}, True)

        score_passes(
            lm.model, {name: [enc.prompt_ids[name][i] for i in idx] for name in flag_systems}, [enc.answer_ids[i] for i in idx], pad,
            budget, None, should_stop, {name: prefix_caches.setdefault(("exact", name), {}) for name in flag_systems},
            on_sample=rechecked,
        )
    return len(chunk), len(near)


def _score_chunk_vllm(lm, systems, chunk, options, emit, on_progress, should_stop) -> tuple[int, int]:
    """``_score_chunk`` through vLLM: the same token ids, the same records (tagged ``vllm``)."""
    from sarft_core.vllm_backend import answer_logps

    enc = encode_passes(lm.tokenizer, systems, chunk, options.max_prompt_tokens, options.max_answer_tokens)
    logps: dict[str, list[list[float]]] = {}
    for k, name in enumerate(systems):
        if should_stop is not None and should_stop():
            from sarft_core.scoring.engine import Cancelled

            raise Cancelled()
        logps[name] = answer_logps(lm, enc.prompt_ids[name], enc.answer_ids, options.tensor_parallel)
        if on_progress:
            on_progress(len(chunk) * (k + 1) / len(systems))
    for i, sample in enumerate(chunk):
        rec = {"key": _sample_key(sample), "answer_ids": enc.answer_ids[i], "prompt_truncated": enc.prompt_truncated[i],
               "answer_truncated": enc.answer_truncated[i], "rechecked": False, "plan": VLLM_PLAN.tag}
        rec.update({name: logps[name][i] for name in systems})
        emit(rec)
    return 0, 0


def _process_split():
    """(rank, world size, wait) under `accelerate launch`, else (0, 1, no-op)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    try:
        from accelerate import PartialState

        # without an accelerator, accelerate forms a multi-CPU group (gloo) only when told cpu=True
        state = PartialState(cpu=not torch.cuda.is_available())
        if state.num_processes > 1:
            return state.process_index, state.num_processes, state.wait_for_everyone
    except Exception:  # accelerate absent or not configured: single process
        pass
    return 0, 1, lambda: None


def score_role(
    lm: LoadedModel,
    samples: Sequence,
    profile: RoleProfile,
    options: ScoreOptions | None = None,
    use_cache: bool = True,
    progress: Callable[[float, float | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScoreResult:
    """Score ``samples`` of one role. ``progress(done_samples, total)`` is called as batches finish."""
    options = options or ScoreOptions()
    options.validate()
    from sarft_core.errors import SarftError

    if not samples:
        raise SarftError("no samples to score", "give a data file with at least one sample for this role")
    started = time.time()
    systems_all = {"ref": REF_SYSTEM_PROMPT, "role": profile.role_prompt, "unsafe": profile.unsafe_prompt}
    systems = {name: systems_all[name] for name in PASSES if name in options.passes}
    cache_dir = _cache_dir(lm, profile, options)
    use_vllm = options.backend == "vllm"
    plan = first_plan = VLLM_PLAN if use_vllm else scoring_plan(lm, options)
    decision = machine_plan(lm) if options.fast else None
    accepted = {"exact", plan.tag}
    rank, world, wait = _process_split()
    done: dict[str, dict] = {}

    def load_cached():
        for path in sorted(cache_dir.glob("records*.jsonl")):
            for rec in read_jsonl(path):
                if isinstance(rec, dict) and "key" in rec and rec.get("plan", "exact") in accepted:
                    done.setdefault(rec["key"], {}).update(rec)

    if use_cache:
        load_cached()
    missing_passes = lambda rec: [p for p in systems if p not in rec]  # noqa: E731
    todo = [s for s in samples if _sample_key(s) not in done or missing_passes(done[_sample_key(s)])]
    from_cache = len(samples) - len(todo)
    mine = todo[rank::world]
    out_path = cache_dir / (f"records.rank{rank}.jsonl" if world > 1 else "records.jsonl")
    total = len(samples)
    if progress:
        progress(from_cache, total)
    prefix_caches: dict = {}
    fresh = 0
    screened = rechecked = 0
    switched_after = None

    def emit(rec):
        nonlocal fresh
        done.setdefault(rec["key"], {}).update(rec)
        if use_cache:
            append_jsonl(out_path, rec)
        fresh += 1

    start = 0
    while start < len(mine):
        size = min(options.chunk_size, SCREEN_PROBE_SAMPLES) if plan.auto and start == 0 else options.chunk_size
        chunk = mine[start : start + size]
        base = from_cache + start * world  # every process advances at about the same pace
        on_progress = (lambda done, base=base: progress(min(total, base + done * world), total)) if progress else None
        if use_vllm:
            n_screened, n_rechecked = _score_chunk_vllm(lm, systems, chunk, options, emit, on_progress, should_stop)
        else:
            n_screened, n_rechecked = _score_chunk(lm, systems, chunk, options, plan, emit, on_progress, should_stop, prefix_caches)
        start += len(chunk)
        if plan.auto:
            screened += n_screened
            rechecked += n_rechecked
            if not screen_still_pays(plan.screen_cost, screened, rechecked, len(systems), len([p for p in systems if p in FLAG_PASSES])):
                plan, switched_after = EXACT_PLAN, start  # this role re-checks too many: the rest is scored exactly
    if world > 1:
        wait()
        load_cached()
    if progress:
        progress(total, total)
    result = _assemble(samples, done, systems, options, stats={
        "samples": total, "from_cache": from_cache, "scored": fresh, "seconds": time.time() - started,
        "rechecked": sum(1 for s in samples if done[_sample_key(s)].get("rechecked")),
        "path": first_plan.label + (f", exact after {switched_after} samples (re-checked {rechecked}/{screened})" if switched_after is not None else ""),
        "plan": decision.describe() if decision is not None else first_plan.label,
        "prompt_truncated": sum(1 for s in samples if done[_sample_key(s)].get("prompt_truncated")),
        "answer_truncated": sum(1 for s in samples if done[_sample_key(s)].get("answer_truncated")),
        "cache_dir": str(cache_dir),
    })
    from sarft_core.validation import require_finite_scores

    # the one check for every caller (CLI, training's D_h, the survey, the dashboard): a NaN
    # margin is never flagged, so non-finite scores would read as "0 flagged"
    require_finite_scores(result.rows, f"RDS scoring of {profile.name}")
    return result


def _assemble(samples, done, systems, options, stats) -> ScoreResult:
    rows, tokens, answers = [], {}, {}
    for s in samples:
        rec = done[_sample_key(s)]
        lp = {p: reduce_logps(rec[p], options.normalise) if p in systems else math.nan for p in PASSES}
        s_role = lp["role"] - lp["ref"]
        s_unsafe = lp["unsafe"] - lp["ref"]
        rows.append({
            "id": s.id, "role": s.role, "input": s.input, "output": s.output,
            "logp_ref": lp["ref"], "logp_role": lp["role"], "logp_unsafe": lp["unsafe"],
            "s_role": s_role, "s_unsafe": s_unsafe,
            "n_tokens": len(rec["answer_ids"]),
        })
        rows[-1]["harmful"] = bool(is_flagged(rows[-1]))  # never needs the reference pass (sarft_core.flags)
        tokens[s.id] = {p: rec[p] for p in systems}
        answers[s.id] = rec["answer_ids"]
    n = len(rows)
    stats = dict(stats, flagged=sum(r["harmful"] for r in rows), flagged_fraction=(sum(r["harmful"] for r in rows) / n) if n else 0.0)
    stats["samples_per_s"] = stats["scored"] / stats["seconds"] if stats["seconds"] > 0 and stats["scored"] else None
    return ScoreResult(rows=rows, token_logps=tokens, answer_ids=answers, stats=stats)
