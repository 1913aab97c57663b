"""``score_role``: every sample of a role under the requested system prompts, cached as it goes."""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Sequence

import torch

from sarft_core.data.profiles import RoleProfile
from sarft_core.models import LoadedModel
from sarft_core.resources import check_scoring_batch
from sarft_core.scoring.engine import Cancelled, encode_passes, reduce_logps, score_passes
from sarft_core.scoring.machine import screen_still_pays
from sarft_core.flags import flag_margin, is_flagged, margin_se, verdict, verdict_counts, wording_spread
from sarft_core.store import append_jsonl
from sarft_core.scoring.cache import _cache_dir, _sample_key, read_records, seal
from sarft_core.scoring.options import (
    EXACT_PLAN, PASSES, REF_SYSTEM_PROMPT, SCREEN_PROBE_SAMPLES, VLLM_PLAN, ScoreOptions, ScoreResult,
    WORDING_PREFIX, batch_tokens, machine_plan, scoring_plan, wording_passes,
)


def _record(sample, enc, i: int, logps: dict, rechecked: bool, tag: str) -> dict:
    """The cache record of sample ``i`` of a chunk: its key, answer ids, truncation flags, the plan
    that scored it and the per-token log-probs of each pass."""
    return seal({"key": _sample_key(sample), "answer_ids": enc.answer_ids[i], "prompt_truncated": enc.prompt_truncated[i],
                 "answer_truncated": enc.answer_truncated[i], "rechecked": rechecked, "plan": tag, **logps})


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
        emit(_record(chunk[i], enc, i, logps, rechecked, plan.tag))

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
        flag_systems = [name for name in systems if name != "ref"]  # no flag, and no flag's error, depends on the reference pass

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
            raise Cancelled()
        logps[name] = answer_logps(lm, enc.prompt_ids[name], enc.answer_ids, options.tensor_parallel)
        if on_progress:
            on_progress(len(chunk) * (k + 1) / len(systems))
    for i, sample in enumerate(chunk):
        emit(_record(sample, enc, i, {name: logps[name][i] for name in systems}, False, VLLM_PLAN.tag))
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
    # the rewordings of the unsafe instruction, whose spread is each flag's error (margin_se)
    systems.update({name: profile.role_prompt.rstrip() + " " + text for name, text in wording_passes(options.wordings).items()})
    cache_dir = _cache_dir(lm, profile, options)
    use_vllm = options.backend == "vllm"
    plan = first_plan = VLLM_PLAN if use_vllm else scoring_plan(lm, options)
    decision = machine_plan(lm) if options.fast else None
    accepted = {"exact", plan.tag}
    rank, world, wait = _process_split()
    done: dict[str, dict] = {}

    def load_cached() -> set[str]:
        records, damaged = read_records(cache_dir, accepted)
        for key, rec in records.items():
            done.setdefault(key, {}).update(rec)
        return damaged

    damaged = load_cached() if use_cache else set()
    missing_passes = lambda rec: [p for p in systems if p not in rec]  # noqa: E731
    todo = [s for s in samples if _sample_key(s) not in done or missing_passes(done[_sample_key(s)])]
    damaged_records = sum(1 for s in todo if _sample_key(s) in damaged)  # scored again, like a torn line
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
            if not screen_still_pays(plan.screen_cost, screened, rechecked, len(systems), len([p for p in systems if p != "ref"])):
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
        "damaged_records": damaged_records,
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
        # how sure the flag is: the spread of the margin over the unsafe instruction's wordings, or
        # without rewordings the margin's block-bootstrap error over the answer's per-token ratios
        reworded = [reduce_logps(rec[p], options.normalise) - lp["role"] for p in systems if p.startswith(WORDING_PREFIX)]
        se = (wording_spread([flag_margin(rows[-1])] + reworded) if reworded
              else margin_se([u - r for u, r in zip(rec["unsafe"], rec["role"])], options.normalise))
        rows[-1]["margin_se"] = se
        rows[-1]["verdict"] = verdict(flag_margin(rows[-1]), se)
        tokens[s.id] = {p: rec[p] for p in systems}
        answers[s.id] = rec["answer_ids"]
    n = len(rows)
    stats = dict(stats, flagged=sum(r["harmful"] for r in rows), flagged_fraction=(sum(r["harmful"] for r in rows) / n) if n else 0.0,
                 verdicts=verdict_counts(r["verdict"] for r in rows),
                 margin_se=(f"spread over {options.wordings + 1} wordings of the unsafe instruction" if options.wordings
                            else "block bootstrap over the answer's tokens"))
    stats["samples_per_s"] = stats["scored"] / stats["seconds"] if stats["seconds"] > 0 and stats["scored"] else None
    return ScoreResult(rows=rows, token_logps=tokens, answer_ids=answers, stats=stats)
