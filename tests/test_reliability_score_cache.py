"""The score cache never serves a record it cannot vouch for (issue 31, part C).

Every record is checked when it is read (its fields, per-token arrays as long as its answer, finite
numbers); a damaged one is scored again like a torn line, and the run says how many. The cache key
holds every input that changes a number, so a changed input is never answered from the cache.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from sarft_core.cli import main
from sarft_core.data.profiles import RoleProfile
from sarft_core.scoring import ScoreOptions, score_role

ROLE = "Baron Vex Morrow"
COLS = ["logp_ref", "logp_role", "logp_unsafe"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _records(cache_dir: str) -> tuple[Path, list[dict]]:
    path = Path(cache_dir) / "records.jsonl"
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def _rewrite(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))  # NaN is written as JSON's NaN


def _damage(records: list[dict]) -> list[dict]:
    """Three kinds of damage, one per record; the fourth record is left whole."""
    shifted, missing, nan = (dict(r) for r in records[:3])
    shifted["answer_ids"] = shifted["answer_ids"] + [shifted["answer_ids"][-1]]  # arrays one token short of the answer
    del missing["answer_ids"]
    nan["unsafe"] = [math.nan] + nan["unsafe"][1:]
    return [shifted, missing, nan, *records[3:]]


def _max_diff(a, b) -> float:
    return float((a.frame()[COLS] - b.frame()[COLS]).abs().max().max())


def test_damaged_records_are_scored_again_and_counted(tiny_lm, demo_profiles, demo_samples, score_cache):
    profile, samples = demo_profiles[ROLE], demo_samples[:4]
    first = score_role(tiny_lm, samples, profile)
    path, records = _records(first.stats["cache_dir"])
    assert len(records) == 4
    _rewrite(path, _damage(records))
    again = score_role(tiny_lm, samples, profile)
    assert again.stats["from_cache"] == 1 and again.stats["scored"] == 3
    assert again.stats["damaged_records"] == 3
    assert _max_diff(again, score_role(tiny_lm, samples, profile, use_cache=False)) < 1e-6
    # the fresh records follow the damaged ones: the next run reads only whole records
    third = score_role(tiny_lm, samples, profile)
    assert third.stats["from_cache"] == 4 and third.stats["damaged_records"] == 0


@pytest.mark.parametrize("damage", [
    lambda r: {**r, "answer_ids": "1,2,3"},
    lambda r: {**r, "answer_ids": [1, "x"]},
    lambda r: {**r, "role": None},
    lambda r: {**r, "role": ["a"] * len(r["answer_ids"])},
    lambda r: {**r, "ref": r["ref"][:-1]},
    lambda r: {**r, "role": [math.inf] * len(r["answer_ids"])},
    lambda r: {**r, "answer_ids": []},
], ids=["ids-text", "ids-not-int", "pass-null", "pass-text", "ref-short", "inf", "empty"])
def test_every_kind_of_damaged_record_is_refused_on_read(damage, tiny_lm, demo_profiles, demo_samples, score_cache):
    profile, samples = demo_profiles[ROLE], demo_samples[:2]
    first = score_role(tiny_lm, samples, profile)
    path, records = _records(first.stats["cache_dir"])
    _rewrite(path, [damage(records[0]), records[1]])
    again = score_role(tiny_lm, samples, profile)
    assert (again.stats["from_cache"], again.stats["damaged_records"]) == (1, 1)
    assert _max_diff(again, first) < 1e-6


def test_cli_says_how_many_damaged_records_it_scored_again(tiny_model_dir, demo_profiles, demo_samples, score_cache, tmp_path, capsys):
    argv = ["score", "--role", ROLE, "--model", str(tiny_model_dir), "--limit", "4", "--out", str(tmp_path / "s.parquet")]
    assert main(argv) == 0
    capsys.readouterr()
    (cache_dir,) = {p.parent for p in score_cache.glob("scores/*/records.jsonl")}
    path, records = _records(str(cache_dir))
    _rewrite(path, _damage(records))
    assert main(argv) == 0  # a NaN record is the cache's damage, not a model failure
    out = capsys.readouterr().out
    assert "from cache 1" in out and "re-scored 3 damaged cache record(s)" in out


def test_every_input_that_changes_a_number_changes_the_cache_key(tiny_lm, demo_profiles, demo_samples, score_cache):
    profile, samples = demo_profiles[ROLE], demo_samples[:3]
    base = score_role(tiny_lm, samples, profile)
    assert score_role(tiny_lm, samples, profile).stats["from_cache"] == 3
    changed = {
        "role prompt": dict(profile=dataclasses.replace(profile, role_prompt=profile.role_prompt + " Speak briefly.")),
        "unsafe prompt": dict(profile=dataclasses.replace(profile, unsafe_prompt=profile.unsafe_prompt + " Now.")),
        "answer limit": dict(options=ScoreOptions(max_answer_tokens=4)),
        "prompt limit": dict(options=ScoreOptions(max_prompt_tokens=16)),
        "weights": dict(lm=dataclasses.replace(tiny_lm, fingerprint=tiny_lm.fingerprint + "-other")),
        "dtype": dict(lm=dataclasses.replace(tiny_lm, model=_bf16(tiny_lm.model))),
    }
    for what, change in changed.items():
        got = score_role(change.get("lm", tiny_lm), samples, change.get("profile", profile), change.get("options"))
        assert got.stats["from_cache"] == 0, what
    edited = [samples[0], dataclasses.replace(samples[1], output=samples[1].output + " Indeed."), samples[2]]
    assert score_role(tiny_lm, edited, profile).stats["from_cache"] == 2  # the sample's text is its record's key
    # an option applied after the cache (the reduction) is served from it, with its own numbers
    summed = score_role(tiny_lm, samples, profile, ScoreOptions(normalise="sum"))
    fresh = score_role(tiny_lm, samples, profile, ScoreOptions(normalise="sum"), use_cache=False)
    assert summed.stats["from_cache"] == 3 and _max_diff(summed, fresh) < 1e-5 and _max_diff(summed, base) > 1e-3


def _bf16(model):
    import copy

    return copy.deepcopy(model).to(torch.bfloat16).eval()


def test_a_changed_chat_template_changes_the_cache_key(tiny_lm, demo_profiles, demo_samples, score_cache):
    profile, samples = demo_profiles[ROLE], demo_samples[:2]
    score_role(tiny_lm, samples, profile)
    tok = tiny_lm.tokenizer
    before = tok.chat_template
    try:
        tok.chat_template = before.replace("<|im_start|>", "<|im_start|> ")
        assert score_role(tiny_lm, samples, profile).stats["from_cache"] == 0
    finally:
        tok.chat_template = before


def test_a_profile_renamed_but_unchanged_shares_the_cache(tiny_lm, demo_profiles, demo_samples, score_cache):
    """The key holds what changes a number, nothing else: a renamed role with the same prompts
    is the same computation."""
    profile, samples = demo_profiles[ROLE], demo_samples[:2]
    score_role(tiny_lm, samples, profile)
    renamed = RoleProfile("Another name", profile.role_prompt, profile.unsafe_prompt)
    assert score_role(tiny_lm, samples, renamed).stats["from_cache"] == 2


def test_a_new_revision_of_a_hub_model_changes_the_cache_key(tiny_lm, demo_profiles, demo_samples, score_cache):
    """A hub model's fingerprint is its id ("hub-org/name"), which stays when the weights upstream
    change; the revision the weights were downloaded at tells the two apart."""
    import copy

    profile, samples = demo_profiles[ROLE], demo_samples[:2]

    def at_revision(commit):
        model = copy.deepcopy(tiny_lm.model)
        model.config._commit_hash = commit
        return dataclasses.replace(tiny_lm, model=model, fingerprint="hub-org/tiny")

    score_role(at_revision("a" * 40), samples, profile)
    assert score_role(at_revision("a" * 40), samples, profile).stats["from_cache"] == 2
    assert score_role(at_revision("b" * 40), samples, profile).stats["from_cache"] == 0
