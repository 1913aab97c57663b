"""Fuzzing the state files scoring reads back: whatever happens to a score-cache record on disk (a
field edited, dropped or retyped, a number nudged, the file cut or padded with garbage), the next
run gives the numbers a fresh run gives, or one SarftError; never another number (issue 31: state
files that prove themselves)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sarft_core.errors import SarftError
from sarft_core.scoring import ScoreOptions, score_role

N_RECORDS = 120
FUZZ = dict(max_examples=N_RECORDS, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
COLS = ["logp_role", "logp_unsafe", "margin_se"]
OPTIONS = ScoreOptions(passes=("role", "unsafe"), wordings=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6), st.booleans(), st.none(),
                    st.text(max_size=4), st.lists(st.floats(-20, 1), max_size=3))


@pytest.fixture(scope="module")
def cached(tiny_model_dir, tmp_path_factory):
    """A clean cache of 3 demo samples and the rows a fresh run gives."""
    import sarft_core.scoring.cache as cache
    from sarft_core.data import DEMO_PROFILES, DEMO_SAMPLES, get_profile, load_profiles, load_samples
    from sarft_core.models import load_model

    root = tmp_path_factory.mktemp("clean-cache")
    original = cache.cache_root
    cache.cache_root = lambda: root
    try:
        lm = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
        profile = get_profile(load_profiles(DEMO_PROFILES), "Baron Vex Morrow")
        samples = load_samples(DEMO_SAMPLES, role=profile.name, limit=3)
        fresh = score_role(lm, samples, profile, OPTIONS)
    finally:
        cache.cache_root = original
    return lm, profile, samples, root, fresh.frame()[COLS]


@settings(**FUZZ)
@given(data=st.data())
def test_a_damaged_record_is_rescored_never_served(cached, tmp_path_factory, monkeypatch, data):
    import sarft_core.scoring.cache as cache

    lm, profile, samples, clean, expected = cached
    root = tmp_path_factory.mktemp("fuzzed")
    shutil.copytree(clean, root, dirs_exist_ok=True)
    (path,) = root.glob("scores/*/records.jsonl")
    lines = path.read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1), label="record")
    rec = json.loads(lines[i])
    action = data.draw(st.sampled_from(["set", "drop", "nudge", "shorten", "cut", "garbage"]), label="action")
    field = data.draw(st.sampled_from(sorted(rec)), label="field")
    if action == "set":
        rec[field] = data.draw(numbers, label="value")
    elif action == "drop":
        rec.pop(field)
    elif action == "nudge" and isinstance(rec.get(field), list) and rec[field] and isinstance(rec[field][0], float):
        k = data.draw(st.integers(0, len(rec[field]) - 1), label="token")
        rec[field][k] += data.draw(st.sampled_from([1e-6, -0.5, 3.0]), label="by")
    elif action == "shorten" and isinstance(rec.get(field), list) and rec[field]:
        rec[field] = rec[field][:-1]
    lines[i] = json.dumps(rec)
    text = "\n".join(lines) + "\n"
    if action == "cut":
        text = text[: data.draw(st.integers(0, len(text)), label="cut at")]
    elif action == "garbage":
        text += data.draw(st.sampled_from(["{", "not json\n", "[1, 2]\n", '{"key": 5}\n', "\x00\x01\n"]), label="garbage")
    path.write_text(text)
    monkeypatch.setattr(cache, "cache_root", lambda: root)
    try:
        got = score_role(lm, samples, profile, OPTIONS).frame()[COLS]
    except SarftError:
        return  # one clear error is allowed; a traceback or another number is not
    diff = (got - expected).abs().max().max()
    assert math.isfinite(diff) and diff < 1e-6, (action, field, diff)
