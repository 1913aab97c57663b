"""Side files of a score table (tokens, review, flags) belong to the exact table they were made
for (issue 31, part C): each records the table's content fingerprint, and beside any other table
it is ignored with a visible word, never applied to another role's scores.
"""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from sarft_core import audit, report
from sarft_core.cli import main
from sarft_core.store import RunDir
from sarft_core.templating import Figures

BARON, ALMA = "Baron Vex Morrow", "Sister Alma Reyes"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _score(model, role, out, *extra) -> int:
    return main(["score", "--role", role, "--model", str(model), "--limit", "6", "--out", str(out), *extra])


@pytest.fixture
def baron_then_alma(tiny_model_dir, score_cache, tmp_path, capsys):
    """Baron scored with tokens and reviewed (τ = 100: nothing flagged), then Alma scored
    without tokens into the same file: the probe's sequence."""
    out = tmp_path / "D" / "scores.parquet"
    assert _score(tiny_model_dir, BARON, out, "--with-tokens") == 0
    baron = audit.load_scores(RunDir(out.parent))
    audit.save_review(baron, out, 100.0, {})
    assert audit.review_state(out) == "current"
    capsys.readouterr()
    assert _score(tiny_model_dir, ALMA, out) == 0
    return out, capsys.readouterr()


def test_side_files_of_another_table_are_ignored_and_named(baron_then_alma):
    out, printed = baron_then_alma
    alma = pd.read_parquet(out)
    assert set(alma["role"]) == {ALMA} and alma["harmful"].sum() > 0
    # the score command says at once that the old files no longer apply
    for name in ("scores.tokens.jsonl", "scores.review.json", "scores.flags.json"):
        assert name in printed.err
    assert "another score table" in printed.err
    run = RunDir(out.parent)
    assert audit.load_token_ratios(run) == {}  # Baron's answers never shade Alma's samples
    assert audit.load_review(out) == (0.0, {})  # Baron's review is not Alma's
    assert audit.review_state(out) == "stale"
    assert sorted(p.name for p in audit.stale_side_files(out)) == ["scores.flags.json", "scores.review.json", "scores.tokens.jsonl"]
    block = report.rds_block(run, Figures(), 8)
    assert block["summary"]["rows"][0]["flagged (D_h)"] == int(alma["harmful"].sum())  # what `score` printed
    assert "saved review" not in block["review_note"] or "ignored" in block["review_note"]
    assert not block["shaded"] and all(e["tokens"] is None for e in block["examples"])
    text = report.build_report(report.discover(out.parent))
    assert "<span title=" not in text
    assert "made for another score table" in text and "scores.tokens.jsonl" in text and "scores.review.json" in text


def test_report_command_names_the_ignored_side_files(baron_then_alma, tmp_path, capsys):
    out, _ = baron_then_alma
    assert main(["report", str(out.parent), "--out", str(tmp_path / "r.html")]) == 0
    err = capsys.readouterr().err
    assert "scores.review.json" in err and "scores.tokens.jsonl" in err and "ignored" in err


def test_side_files_stay_with_their_table(tiny_model_dir, score_cache, tmp_path, capsys):
    """The same table written again (all from cache) or copied elsewhere keeps its tokens and review."""
    out = tmp_path / "D" / "scores.parquet"
    assert _score(tiny_model_dir, BARON, out, "--with-tokens") == 0
    scores = audit.load_scores(RunDir(out.parent))
    first = str(scores["id"].iloc[0])
    audit.save_review(scores, out, 100.0, {first: True})
    assert _score(tiny_model_dir, BARON, out) == 0  # no --with-tokens: the tokens of this same table stay valid
    assert "another score table" not in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(out.parent, copy)
    for folder in (out.parent, copy):
        assert audit.load_review(folder / "scores.parquet") == (100.0, {first: True})
        assert set(audit.load_token_ratios(RunDir(folder))) == set(scores["id"])
        assert audit.stale_side_files(folder / "scores.parquet") == []
        block = report.rds_block(RunDir(folder), Figures(), 8)
        assert block["summary"]["rows"][0]["flagged (D_h)"] == 1 and block["review_note"] == "the analyst's saved review"


def test_side_files_written_before_the_stamp_are_not_trusted(tiny_model_dir, score_cache, tmp_path, capsys):
    """A review or tokens file with no fingerprint cannot show which table it was made for."""
    out = tmp_path / "D" / "scores.parquet"
    assert _score(tiny_model_dir, BARON, out) == 0
    ids = list(pd.read_parquet(out)["id"])
    audit.review_path(out).write_text(json.dumps({"tau": 100.0, "overrides": {}}))
    audit.tokens_path(out).write_text("".join(json.dumps({"id": i, "tokens": ["a"], "ratio": [0.1]}) + "\n" for i in ids))
    assert audit.load_review(out) == (0.0, {}) and audit.load_token_ratios(RunDir(out.parent)) == {}
    assert {p.name for p in audit.stale_side_files(out)} == {"scores.review.json", "scores.tokens.jsonl"}

