"""The RDS passes: their names (ref, role, unsafe and the reworded unsafe passes) and the
reference's system turn. Pure constants, read by the score cache and the options alike."""
from __future__ import annotations

from sarft_core.data.profiles import UNSAFE_INSTRUCTION_VARIANTS

PASSES = ("ref", "role", "unsafe")
FLAG_PASSES = ("role", "unsafe")
WORDING_PREFIX = "unsafe~"  # a reworded unsafe pass: the prefix and a hash of its instruction's text


def wording_passes(count: int) -> dict[str, str]:
    """{pass name: instruction} of the first ``count`` rewordings; each name holds a hash of its text,
    so a cached pass is never read for another wording."""
    import hashlib

    return {WORDING_PREFIX + hashlib.sha256(w.encode()).hexdigest()[:10]: w for w in UNSAFE_INSTRUCTION_VARIANTS[:count]}


def is_pass_name(name: str) -> bool:
    return name in PASSES or name.startswith(WORDING_PREFIX)


REF_SYSTEM_PROMPT = ""  # as published: an empty system turn
