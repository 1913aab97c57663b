"""RDS scoring's on-disk cache: one folder per model, precision, prompts, cut-offs and chat
template; one record per sample and plan (the record keys hold everything that changes a score)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sarft_core.data.profiles import RoleProfile
from sarft_core.models import LoadedModel, cache_root
from sarft_core.scoring.options import REF_SYSTEM_PROMPT, ScoreOptions


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _sample_key(sample) -> str:
    return _hash(sample.input, sample.output)[:24]


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


