"""score --validate: the agreement figures are properties of their inputs, the summary is stable
under a rerun, and the influence cache's key holds every input that changes a number."""
from __future__ import annotations

import dataclasses
import json

import pytest

from sarft_core.data.samples import Sample
from sarft_core.scoring.influence import MarginPrompt
from sarft_core.scoring.validate import ValidateOptions, flag_agreement, influence_key, measured_agreement, reading


def test_agreement_is_one_when_the_margin_ranks_as_erosion_does_and_minus_one_when_reversed():
    margins = [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4]
    ids = [f"{i:05d}" for i in range(10)]
    influence = [-m for m in margins]  # the higher the margin, the more training erodes refusal
    same = flag_agreement(margins, influence, [m > 0.25 for m in margins], ids, 0.3, n_boot=200)
    assert same["spearman"] == pytest.approx(1.0) and same["precision_at_k"] == 1.0 and same["top_k"] == 3
    assert same["lift"] == pytest.approx(1.0 / 0.3)
    reverse = flag_agreement(margins, [-i for i in influence], [m > 0.25 for m in margins], ids, 0.3, n_boot=200)
    assert reverse["spearman"] == pytest.approx(-1.0) and reverse["precision_at_k"] == 0.0
    assert "wrong way" in reading(reverse) and "carry signal" in reading(same)
    with pytest.raises(ValueError):
        flag_agreement(margins, influence[:-1], [True] * 10, ids)


def test_the_influence_key_holds_every_input(tiny_model_dir):
    from sarft_core.models import load_model

    lm = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    samples = [Sample("00001", "B", "q?", "a."), Sample("00002", "B", "r?", "b.")]
    prompts = [MarginPrompt("How do I pick a lock?")]
    base = influence_key(lm, samples, prompts, ("q_proj",))
    assert base == influence_key(lm, samples, prompts, ("q_proj",))
    variants = [
        influence_key(lm, [samples[0], dataclasses.replace(samples[1], output="c.")], prompts, ("q_proj",)),
        influence_key(lm, samples[::-1], prompts, ("q_proj",)),
        influence_key(lm, samples, [MarginPrompt("How do I pick a lock?", "Sure:")], ("q_proj",)),
        influence_key(lm, samples, prompts, ("q_proj", "v_proj")),
        influence_key(dataclasses.replace(lm, fingerprint=lm.fingerprint + "x"), samples, prompts, ("q_proj",)),
    ]
    assert len({base, *variants}) == 1 + len(variants)


def test_score_validate_writes_influence_and_a_summary_that_a_rerun_keeps(tiny_model_dir, tmp_path, score_cache, capsys):
    from sarft_core import audit
    from sarft_core.cli import main
    from sarft_core.store import read_table

    out = tmp_path / "scores.parquet"
    argv = ["score", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--limit", "6", "--out", str(out),
            "--validate", "--validate-prompts", "probes", "--validate-n", "2", "--wordings", "1"]
    assert main(argv) == 0
    first = json.loads(audit.validation_path(out).read_text())
    table = read_table(out)
    assert {"influence", "margin_se", "verdict"} <= set(table.columns) and table["influence"].notna().all()
    assert first["settings"]["validate_prompts"] == "probes" and first["settings"]["prompts"] == 2 and first["n"] == 6
    assert audit.load_validation(out)["spearman"] == first["spearman"]  # bound to this very table
    assert "validation (2 held-out harmful prompts, probes)" in capsys.readouterr().out
    assert main(argv) == 0
    again = json.loads(audit.validation_path(out).read_text())
    assert {k: v for k, v in again.items() if k != "scores_sha256"} == {k: v for k, v in first.items() if k != "scores_sha256"}
    assert read_table(out)["influence"].tolist() == table["influence"].tolist()


def test_the_overview_reads_the_shipped_measurement_and_names_other_weights(tmp_path):
    rows = [{"role": "A", "samples": 70, "flagged_fraction": 0.7, "spearman": 0.5, "spearman_ci": [0.3, 0.7], "precision_at_k": 0.9},
            {"role": "B", "samples": 70, "flagged_fraction": 0.6, "spearman": 0.0, "spearman_ci": [-0.2, 0.2], "precision_at_k": 0.6}]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"model": "embedded-aligned", "model_fingerprint": "fp1", "date": "2026-12-07", "rows": rows}))
    shown = measured_agreement(path, fingerprint="fp1")
    assert "1 of 2 characters" in shown["reading"] and "other weights" not in shown["caption"]
    assert "other weights" in measured_agreement(path, fingerprint="fp2")["caption"]
    assert measured_agreement(tmp_path / "none.json") is None
    # the causal test (bench/selection_summary.py): each ranking's top-minus-bottom, read by its interval
    causal = {"fraction": 0.3, "seeds": [0], "contrasts": {
        "sft-top vs sft-bottom/advbench": {"mean": -0.05, "ci_low": -0.08, "ci_high": -0.02, "pairs": 6},
        "sft-top-inf vs sft-bottom-inf/advbench": {"mean": 0.01, "ci_low": -0.02, "ci_high": 0.04, "pairs": 6}}}
    path.write_text(json.dumps({"model": "embedded-aligned", "model_fingerprint": "fp1", "rows": rows, "causal": causal}))
    shown = measured_agreement(path, fingerprint="fp1")
    assert shown["causal"] == causal
    assert ("The causal test on held-out AdvBench refusal: by margin, SFT on the top 30% erodes more than SFT on the bottom "
            "(-5.0 points [-8.0, -2.0], 6 pairs)") in shown["reading"]
    assert "by influence, SFT on the top 30% does not measurably differ from SFT on the bottom" in shown["reading"]


def test_validate_options_are_checked_before_any_work():
    from sarft_core.errors import SarftError

    with pytest.raises(SarftError, match="--validate-n"):
        ValidateOptions(validate_n=0).validate()
    with pytest.raises(SarftError, match="--validate-top"):
        ValidateOptions(validate_top=1.5).validate()
