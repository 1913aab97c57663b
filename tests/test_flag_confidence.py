"""Flags an analyst can trust (#27): how sure each flag is, and how far the flags agree with measured
harm, reach every export, the HTML report, the survey and the CLI summaries.

Real score tables of the tiny random model, written and read through the project's own writers."""
from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from sarft_core import audit, plots, report
from sarft_core.cli import main
from sarft_core.flags import VERDICTS, verdicts
from sarft_core.store import read_table

ROLE = "Baron Vex Morrow"
INJECTED = "<script>alert(1)</script>"
# the validation on two of the project's harmful probes: seconds on the tiny model
VALIDATE = ["--validate", "--validate-prompts", "probes", "--validate-n", "2"]


def score_cli(tiny_model_dir, out: Path, *extra) -> int:
    return main(["score", "--role", ROLE, "--model", str(tiny_model_dir), "--limit", "6", "--out", str(out), *extra])


def assert_confidences(df: pd.DataFrame) -> None:
    """Every row has a verdict among VERDICTS that its own margin and error give back."""
    assert {"margin_se", "verdict"} <= set(df.columns)
    assert set(df["verdict"]) <= set(VERDICTS)
    se = df["margin_se"].astype(float)
    assert ((se >= 0) | se.isna()).all()
    assert list(verdicts(df)) == list(df["verdict"])  # what was exported is what its numbers say


# --- 1. exports ----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_every_score_table_format_carries_margin_se_and_verdict(tmp_path, tiny_model_dir, score_cache, suffix):
    out = tmp_path / f"scores{suffix}"
    assert score_cli(tiny_model_dir, out) == 0
    df = read_table(out)
    assert len(df) == 6
    assert_confidences(df)


def test_dashboard_downloads_of_d_h_carry_how_sure_each_flag_is(tmp_path, tiny_model_dir, score_cache):
    out = tmp_path / "scores.parquet"
    assert score_cli(tiny_model_dir, out, *VALIDATE, "--no-cache") == 0
    scores = read_table(out)
    flags = audit.effective_flags(scores)
    assert flags.any()
    jsonl = pd.read_json(io.BytesIO(audit.d_h_bytes(scores, flags, "jsonl")), lines=True)
    csv = pd.read_csv(io.BytesIO(audit.d_h_bytes(scores, flags, "csv")))
    for df in (jsonl, csv):
        assert len(df) == int(flags.sum())
        assert {"margin_se", "verdict", "influence"} <= set(df.columns)
        assert set(df["verdict"]) <= set(VERDICTS)
        assert df["influence"].notna().all()
    exported = audit.export_d_h(scores, flags, tmp_path / "d_h.csv")
    assert {"margin_se", "verdict"} <= set(read_table(exported).columns)
    # a table scored before confidences were recorded exports none, rather than "uncertain" everywhere
    old = scores.drop(columns=["margin_se", "verdict", "influence"])
    assert "verdict" not in pd.read_csv(io.BytesIO(audit.d_h_bytes(old, flags, "csv"))).columns


# --- 2. the HTML report --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def validated_run(tmp_path_factory, tiny_model_dir):
    """A bare score folder written by `score --validate` with the tiny model."""
    run = tmp_path_factory.mktemp("validated") / "score-baron"
    assert score_cli(tiny_model_dir, run / "scores.parquet", "--with-tokens", *VALIDATE, "--no-cache") == 0
    return run


def plotted(text: str, name: str) -> list[dict]:
    """The traces of the report's figure ``name`` (the first Plotly.newPlot after its div)."""
    at = text.index("Plotly.newPlot(", text.index(f'data-figure="{name}"'))
    data, _ = json.JSONDecoder().raw_decode(text, text.index("[", text.index(",", at) + 1))
    return data


def summary_row(text: str) -> dict[str, str]:
    table = text.split('<table class="summary">', 1)[1].split("</table>", 1)[0]
    heads = re.findall(r"<th>(.*?)</th>", table)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", table)
    return dict(zip(heads, cells))


def test_report_shows_verdict_counts_beside_the_flagged_count(validated_run):
    text = report.build_report(report.discover(validated_run))
    row = summary_row(text)
    counts = [int(row[k]) for k in ("flagged with 95% confidence", "uncertain", "kept with 95% confidence")]
    assert sum(counts) == int(row["samples"]) == 6
    scores = read_table(validated_run / "scores.parquet")
    assert counts[0] <= int(row["flagged (D_h)"])  # a confident flag is a flag
    assert counts[0] == int((scores["verdict"] == "flagged").sum())
    # each example shown names its verdict
    metas = re.findall(r'<div class="meta">.*?</div>', text)
    assert metas and all('class="verdict"' in m for m in metas)


def test_report_margin_figure_has_an_error_bar_per_sample(validated_run):
    text = report.build_report(report.discover(validated_run))
    assert 'data-figure="rds-margins"' in text and 'data-figure="rds-histogram"' not in text
    points = [t for t in plotted(text, "rds-margins") if t.get("mode") == "markers"]
    assert points and all(t["error_y"]["visible"] for t in points)
    assert sum(len(t["error_y"]["array"]) for t in points) == 6  # one bar (or none known) per sample


def test_margin_intervals_bars_agree_with_the_verdicts(validated_run):
    """A confidently flagged sample's interval lies above τ, a kept one's below, an uncertain one's
    straddles it (or its error is unknown)."""
    scores = read_table(validated_run / "scores.parquet")
    for tau in (0.0, float(scores["margin_se"].median())):
        fig = plots.margin_intervals(scores, tau)
        traces = [t for t in fig.data if t.mode == "markers"]
        assert sum(len(t.y) for t in traces) == len(scores)
        for trace in traces:
            state = next(v for v in VERDICTS if plots.FLAG_VERDICT_NAMES[v] in trace.name)
            for y, bar in zip(trace.y, trace.error_y.array):
                if state == "flagged":
                    assert y - bar > tau
                elif state == "kept":
                    assert y + bar < tau
                else:
                    assert bar is None or y - bar <= tau <= y + bar
        assert list(trace.x) == sorted(trace.x)
    old = scores.drop(columns=["margin_se", "verdict"])
    assert plots.NO_CONFIDENCE in plots.margin_intervals(old).layout.annotations[0].text


def test_report_says_how_much_to_trust_the_flags_from_the_validation(validated_run, tmp_path):
    import shutil

    text = report.build_report(report.discover(validated_run))
    validation = audit.load_validation(validated_run / "scores.parquet")
    assert validation
    assert "How much to trust these flags on this model" in text
    assert validation["reading"].split("(")[0].strip() in text
    assert f"{validation['spearman']:+.2f}" in text
    assert f"flagged among the top {validation['top_k']} samples" in text
    assert f"{validation['settings']['prompts']} (probes)" in text
    # a hand-edited side file still comes out as text
    copy = tmp_path / "copy"
    shutil.copytree(validated_run, copy)
    path = audit.validation_path(copy / "scores.parquet")
    path.write_text(json.dumps(dict(json.loads(path.read_text()), reading=f"Trust me {INJECTED}")))
    edited = report.build_report(report.discover(copy))
    assert INJECTED not in edited and "Trust me &lt;script&gt;" in edited
    # no validation: no section
    path.unlink()
    assert "How much to trust" not in report.build_report(report.discover(copy))


def test_report_of_a_table_scored_before_confidences_says_rescore(validated_run, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    scores = read_table(validated_run / "scores.parquet").drop(columns=["margin_se", "verdict"])
    scores.to_parquet(old / "scores.parquet", index=False)
    text = report.build_report(report.discover(old))
    assert "scored before confidences were recorded" in text and "score the role again" in text
    assert "uncertain" not in summary_row(text)  # never shown as uncertain findings
    assert 'data-figure="rds-histogram"' in text


# --- 3. the survey -------------------------------------------------------------------------------

SURVEY_ROLES = ["Baron Vex Morrow", "Sister Alma Reyes", "Captain Nell Corran"]
TRUST = ["confident_flagged_fraction", "uncertain_fraction", "validation_spearman", "validation_spearman_ci_low",
         "validation_spearman_ci_high"]


@pytest.fixture
def traits_csv(tmp_path):
    path = tmp_path / "traits.csv"
    path.write_text("role,malevolence,aggression,deceptiveness,benevolence\n"
                    "Baron Vex Morrow,0.95,0.8,0.8,0.05\nSister Alma Reyes,0.05,0.05,0.1,0.95\nCaptain Nell Corran,0.3,0.5,0.3,0.6\n")
    return path


@pytest.fixture
def influence_cache(tmp_path, monkeypatch):
    """A private influence cache (validate_flags keeps it under the models' cache root)."""
    import sarft_core.models as models

    monkeypatch.setattr(models, "cache_root", lambda: tmp_path / "influence-home")


def survey_config(tiny_model_dir, traits_csv, **kw):
    from sarft_core.survey import SCREEN, SurveyConfig

    return SurveyConfig(roles=SURVEY_ROLES, mode=SCREEN, model=str(tiny_model_dir), limit=6, exact=True,
                        trait_source="csv", trait_csv=str(traits_csv), **kw)


def test_survey_validate_gives_each_character_its_confidence_and_spearman(tmp_path, tiny_model_dir, traits_csv, score_cache,
                                                                            influence_cache):
    from sarft_core.survey import open_survey, role_slug, run_pending, write_aggregate
    from sarft_core.surveyview import flag_trust_table, survey_frame, trait_columns

    out = tmp_path / "survey"
    run_pending(open_survey(out, survey_config(tiny_model_dir, traits_csv, validation=True)), show_progress=False)
    survey = open_survey(out, survey_config(tiny_model_dir, traits_csv, validation=True))
    assert survey.pending() == []
    table, _ = write_aggregate(survey)
    assert set(TRUST) <= set(table.columns)
    for _, row in table.iterrows():
        scores = read_table(out / "roles" / role_slug(row["role"]) / "scores.parquet")
        assert row["confident_flagged_fraction"] == pytest.approx((scores["verdict"] == "flagged").mean())
        assert row["uncertain_fraction"] == pytest.approx((scores["verdict"] == "uncertain").mean())
        assert scores["influence"].notna().all()
        validation = audit.load_validation(out / "roles" / role_slug(row["role"]) / "scores.parquet")
        assert row["validation_spearman"] == pytest.approx(validation["spearman"])
        assert -1 <= row["validation_spearman_ci_low"] <= row["validation_spearman_ci_high"] <= 1
    # measurements of the flags are never offered as character traits (page and report alike)
    frame = survey_frame(out / "table.csv")
    assert trait_columns(frame) == ["malevolence", "aggression", "deceptiveness", "benevolence"]
    assert list(flag_trust_table(frame).columns) == ["role", "flagged_fraction", *TRUST]
    text = report.build_report(report.discover(out))
    assert "How sure each role&#39;s flags are" in text or "How sure each role's flags are" in text
    for column in TRUST:
        assert f"<th>{column}</th>" in text
    assert not any(f'data-figure="trait-{c}"' in text for c in TRUST)


def test_survey_resume_key_holds_whether_validation_was_asked(tmp_path, tiny_model_dir, traits_csv, score_cache, influence_cache):
    from sarft_core.survey import open_survey, run_pending
    from sarft_core.survey.config import role_key

    out = tmp_path / "survey"
    plain = survey_config(tiny_model_dir, traits_csv)
    run_pending(open_survey(out, plain), show_progress=False)
    assert open_survey(out, plain).pending() == []
    # asked for validation, the same survey resumes (no refusal) and redoes every role
    validated = open_survey(out, survey_config(tiny_model_dir, traits_csv, validation=True))
    assert validated.pending() == SURVEY_ROLES
    profile, samples = validated.role_inputs(SURVEY_ROLES[0])
    assert role_key(plain, profile, samples, "m") != role_key(validated.config, profile, samples, "m")
    run_pending(validated, show_progress=False)
    assert all("validation" in validated.result(r)["score"] for r in SURVEY_ROLES)
    assert open_survey(out, survey_config(tiny_model_dir, traits_csv, validation=True)).pending() == []


def test_survey_cli_passes_validate_to_its_workers_and_prints_confident_counts(tmp_path, tiny_model_dir, traits_csv):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "cli-survey"
    env = dict(os.environ, PYTHONPATH=str(root), SARFT_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "sarft_core", "survey", "--roles", "all", "--screen", "--limit", "4", "--exact", "--validate",
           "--model", str(tiny_model_dir), "--traits", "csv", "--traits-csv", str(traits_csv), "--workers", "2",
           "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(out / "table.csv")
    assert table["validation_spearman"].notna().all()  # every worker validated its roles
    again = subprocess.run(cmd[:-5] + ["--workers", "1", "--no-progress", "--out", str(out)], cwd=root, capture_output=True,
                           text=True, timeout=300, env=env)
    assert again.returncode == 0 and "3 done, 0 to do" in again.stderr
    from sarft_core.survey import SurveyConfig, open_survey, role_line

    survey = open_survey(out, SurveyConfig(**{k: v for k, v in json.loads((out / "config.json").read_text()).items()
                                             if k in SurveyConfig.__dataclass_fields__}))
    for role in SURVEY_ROLES:
        result = survey.result(role)
        counts = result["score"]["verdicts"]
        line = role_line(result)
        assert f"with 95% confidence {counts['flagged']} flagged, {counts['uncertain']} uncertain" in line
        assert "validation Spearman" in line
        assert line in proc.stderr  # what the survey printed when the role finished


def test_roles_scored_before_verdicts_are_unknown_not_uncertain():
    from sarft_core.survey.aggregate import flag_trust
    from sarft_core.surveyview import trait_columns, unconfident_note

    old = flag_trust({"samples": 5, "flagged_fraction": 0.4})
    assert all(math.isnan(v) for v in old.values()) and not any(k.startswith("validation") for k in old)
    new = flag_trust({"verdicts": {"flagged": 1, "uncertain": 3, "kept": 0}})
    assert new == {"confident_flagged_fraction": 0.25, "uncertain_fraction": 0.75}
    table = pd.DataFrame([{"role": "a", "malevolence": 0.1, "flagged_fraction": 0.4, **old},
                          {"role": "b", "malevolence": 0.9, "flagged_fraction": 0.2, **new}])
    assert trait_columns(table) == ["malevolence"]
    assert "1 role was scored before confidences were recorded" in unconfident_note(table)
    assert unconfident_note(table.iloc[1:]) is None


def test_survey_help_names_the_validate_option(capsys):
    assert main(["survey", "--help"]) == 0  # the help's text is formatted (a bare % once broke it)
    assert "--validate" in capsys.readouterr().out
