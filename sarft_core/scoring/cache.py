"""RDS scoring's on-disk cache: one folder per model, precision, prompts, cut-offs and chat
template; one record per sample and plan (the record keys hold everything that changes a score)."""
from __future__ import annotations

import math
from pathlib import Path

from sarft_core.data.profiles import RoleProfile
from sarft_core.models import LoadedModel, cache_root
from sarft_core.scoring.passes import REF_SYSTEM_PROMPT, is_pass_name
from sarft_core.store import json_digest, read_jsonl


def _sample_key(sample) -> str:
    return json_digest(sample.input, sample.output)[:24]


def _cache_dir(lm: LoadedModel, profile: RoleProfile, options) -> Path:
    """The role's score cache. Exact and fast runs share it: every record carries the tag of
    the plan that made it (:attr:`FastPlan.tag`), and a run reads only the records its own
    plan, or the exact one, made."""
    template = getattr(lm.tokenizer, "chat_template", None) or ""
    # a hub model's fingerprint is its id, which outlives new weights upstream: the revision the
    # weights came from tells them apart (added only where known, so other keys stay as they were)
    revision = getattr(getattr(lm.model, "config", None), "_commit_hash", None)
    key = json_digest(
        "rds-v1", lm.fingerprint, str(lm.dtype), profile.role_prompt, profile.unsafe_prompt, REF_SYSTEM_PROMPT,
        options.max_prompt_tokens, options.max_answer_tokens, template, *([revision] if isinstance(revision, str) else []),
    )
    path = cache_root() / "scores" / key[:32]
    path.mkdir(parents=True, exist_ok=True)
    return path




def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


CHECK = "check"  # each record's digest of its own content, written with it


def record_check(rec: dict) -> str:
    """The digest of a record's content (every field but the digest itself). JSON keeps floats
    exactly, so a record read back gives the digest it was written with."""
    return json_digest({k: v for k, v in rec.items() if k != CHECK})[:16]


def seal(rec: dict) -> dict:
    """``rec`` with its digest: any later change to it, even a finite number edited to another, is
    caught on read (:func:`record_problem`) and the sample scored again."""
    return {**rec, CHECK: record_check(rec)}


def record_problem(rec: dict) -> str | None:
    """Why a cache record cannot be used, or None when it is whole. A record is data from disk:
    an edit, a bug of an older version or bit rot can leave arrays that no longer match its answer,
    and such a record would give wrong log-probs without any error."""
    if not isinstance(rec.get("key"), str):
        return "no key"
    if not isinstance(rec.get("plan", "exact"), str):
        return "plan is not text"
    ids = rec.get("answer_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        return "answer_ids is not a list of token ids"
    for name in [k for k in rec if is_pass_name(k)]:
        logps = rec[name]
        if not isinstance(logps, list) or len(logps) != len(ids):
            return f"{name} log-probs do not match the answer's {len(ids)} tokens"
        if not all(_is_number(x) for x in logps):
            return f"{name} log-probs are not all finite numbers"
    if rec.get(CHECK) != record_check(rec):
        return "its digest does not match its content (edited, or written before records carried one)"
    return None


def read_records(cache_dir: Path, plans: set[str]) -> tuple[dict[str, dict], set[str]]:
    """The usable records of ``cache_dir`` made by one of ``plans`` (sample key -> record, the
    passes of several records of one sample merged), and the keys of damaged ones (:func:`record_problem`),
    which are scored again like a torn line."""
    done: dict[str, dict] = {}
    damaged: set[str] = set()
    for path in sorted(cache_dir.glob("records*.jsonl")):
        for rec in read_jsonl(path):
            plan = rec.get("plan", "exact")
            if isinstance(plan, str) and plan not in plans:
                continue
            if record_problem(rec) is not None:
                if isinstance(rec.get("key"), str):
                    damaged.add(rec["key"])
                continue
            known = done.get(rec["key"])
            if known is not None and known["answer_ids"] == rec["answer_ids"]:
                known.update(rec)
            else:  # passes of two tokenisations never mix: the later record wins
                done[rec["key"]] = dict(rec)
    return done, damaged
