"""The survey: screening end to end on the demo roles with the tiny model, resume, workers, steps."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sarft_core.errors import SarftError
from sarft_core.survey import (
    FULL, SCREEN, Steps, SurveyConfig, find_metrics, open_survey, role_slug, run_cli, run_pending, write_aggregate,
)

ROOT = Path(__file__).resolve().parents[1]
ROLES = ["Baron Vex Morrow", "Sister Alma Reyes", "Captain Nell Corran"]


@pytest.fixture
def traits_csv(tmp_path):
    # user annotations keep these tests independent of the embedding model (tested in test_traits.py)
    path = tmp_path / "traits.csv"
    path.write_text("role,malevolence,aggression,deceptiveness,benevolence\n"
                    "Baron Vex Morrow,0.95,0.8,0.8,0.05\nSister Alma Reyes,0.05,0.05,0.1,0.95\nCaptain Nell Corran,0.3,0.5,0.3,0.6\n")
    return path


def _config(tiny_model_dir, traits_csv, **kw):
    return SurveyConfig(roles=ROLES, mode=SCREEN, model=str(tiny_model_dir), limit=6, exact=True,
                        trait_source="csv", trait_csv=str(traits_csv), **kw)


def test_screening_runs_and_resumes_after_interruption(tmp_path, tiny_model_dir, traits_csv, score_cache):
    out = tmp_path / "survey"
    survey = open_survey(out, _config(tiny_model_dir, traits_csv))
    calls = []
    real_score = Steps().score

    def counting_score(ctx):
        calls.append(ctx.role)
        return real_score(ctx)

    def interrupt(result):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the first role

    with pytest.raises(KeyboardInterrupt):
        run_pending(survey, Steps(score=counting_score), show_progress=False, on_role_done=interrupt)
    assert calls == ROLES[:1] and survey.pending() == ROLES[1:]
    first = survey.result_path(ROLES[0]).read_text()
    # a role that crashed mid-way leaves work files but no result: it is redone
    (survey.role_dir(ROLES[1]) / "samples.jsonl").write_text("half-written")

    resumed = open_survey(out, _config(tiny_model_dir, traits_csv))
    calls.clear()
    run_pending(resumed, Steps(score=counting_score), show_progress=False)
    assert calls == ROLES[1:]  # the finished role was not redone
    assert resumed.result_path(ROLES[0]).read_text() == first
    assert resumed.pending() == []

    table, corr = write_aggregate(resumed)
    assert list(table["role"]) == ROLES
    assert table["samples"].tolist() == [6, 6, 6]
    assert ((table["flagged_fraction"] >= 0) & (table["flagged_fraction"] <= 1)).all()
    scores = pd.read_parquet(out / "roles" / role_slug("Baron Vex Morrow") / "scores.parquet")
    assert table.loc[0, "flagged_fraction"] == pytest.approx(scores["harmful"].mean())
    assert set(corr["trait"]) == {"malevolence", "aggression", "deceptiveness", "benevolence"}
    assert (corr["target"] == "flagged_fraction").all() and (corr["n"] == 3).all()
    assert (out / "table.csv").is_file() and (out / "correlations.csv").is_file()


def test_changed_settings_refuse_to_resume(tmp_path, tiny_model_dir, traits_csv):
    out = tmp_path / "s"
    open_survey(out, _config(tiny_model_dir, traits_csv))
    with pytest.raises(SarftError, match="other settings"):
        open_survey(out, SurveyConfig(**dict(_config(tiny_model_dir, traits_csv).to_dict(), limit=7)))


def test_the_survey_scores_with_the_rewordings_it_is_given(tmp_path, tiny_model_dir, traits_csv, score_cache):
    """--wordings reaches the scorer (0: the token bootstrap, no reworded passes) and is part of a
    role's key only where it differs from score's default, so the keys of earlier surveys stand."""
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles
    from sarft_core.scoring.options import DEFAULT_WORDINGS
    from sarft_core.survey.config import role_key

    base = _config(tiny_model_dir, traits_csv)
    bootstrap = SurveyConfig(**dict(base.to_dict(), wordings=0))
    profile = get_profile(load_profiles(DEMO_PROFILES), ROLES[0])
    assert base.wordings == DEFAULT_WORDINGS
    assert role_key(base, profile, [], "fp") != role_key(bootstrap, profile, [], "fp")
    out = tmp_path / "s0"
    survey = open_survey(out, SurveyConfig(**dict(bootstrap.to_dict(), roles=ROLES[:1])))
    run_pending(survey, Steps(), show_progress=False)
    cache_dirs = [p for p in score_cache.rglob("*.jsonl")]
    records = [json.loads(line) for p in cache_dirs for line in p.read_text().splitlines() if line.strip()]
    assert records and not any(k.startswith("unsafe~") for r in records for k in r)  # no reworded pass was scored
    with pytest.raises(SarftError, match="other settings"):
        open_survey(out, SurveyConfig(**dict(base.to_dict(), roles=ROLES[:1])))


def test_cli_screening_with_two_workers_and_rerun(tmp_path, tiny_model_dir, traits_csv):
    out = tmp_path / "cli-survey"
    cmd = [sys.executable, "-m", "sarft_core", "survey", "--roles", "all", "--screen", "--limit", "4", "--exact",
           "--model", str(tiny_model_dir), "--traits", "csv", "--traits-csv", str(traits_csv), "--workers", "2",
           "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "flagged" in proc.stderr and " s)" in proc.stderr  # per-role lines with their time
    table = pd.read_csv(out / "table.csv")
    assert sorted(table["role"]) == sorted(ROLES)
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "roles").glob("*.json")}
    again = subprocess.run(cmd[:-5] + ["--workers", "1", "--no-progress", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 done, 0 to do" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "roles").glob("*.json")} == mtimes


def test_full_mode_with_plugged_steps_and_correlations(tmp_path, traits_csv):
    """Full mode through custom steps: the survey only orchestrates and aggregates."""
    cfg = SurveyConfig(roles=ROLES, mode=FULL, methods=["sft", "sarft"], limit=3, trait_source="csv", trait_csv=str(traits_csv))
    survey = open_survey(tmp_path / "full", cfg)
    evil = {"Baron Vex Morrow": 0.9, "Sister Alma Reyes": 0.1, "Captain Nell Corran": 0.4}
    steps = Steps(
        score=lambda ctx: {"samples": len(ctx.samples), "flagged": 1, "flagged_fraction": evil[ctx.role], "mean_margin": 0.0},
        train=lambda ctx, method: {"run": str(ctx.work_dir / method), "method": method},
        evaluate=lambda ctx, train: {"refusal_rate": 0.9 - evil[ctx.role] * (0.5 if train["method"] == "sft" else 0.1), "rouge_l": 20.0},
        evaluate_base=lambda survey: {"refusal_rate": 0.9},
    )
    run_pending(survey, steps, show_progress=False)
    table, corr = write_aggregate(survey)
    assert len(table) == 6 and set(table["method"]) == {"sft", "sarft"}
    row = table[(table.role == "Baron Vex Morrow") & (table.method == "sft")].iloc[0]
    assert row["safety_before"] == 0.9 and row["degradation"] == pytest.approx(0.45)
    sft = corr[(corr.target == "degradation") & (corr.method == "sft") & (corr.trait == "malevolence")].iloc[0]
    assert sft["n"] == 3 and sft["spearman_r"] == pytest.approx(1.0)


def test_missing_command_fails_the_step_and_the_survey_goes_on(tmp_path, traits_csv):
    cfg = SurveyConfig(roles=ROLES[:2], mode=FULL, methods=["sft"], limit=2, trait_source="csv", trait_csv=str(traits_csv))
    survey = open_survey(tmp_path / "f", cfg)
    steps = Steps(score=lambda ctx: {"samples": 2, "flagged": 0, "flagged_fraction": 0.0, "mean_margin": 0.0},
                  train=lambda ctx, m: run_cli(["no-such-command"], ctx.work_dir / "x.log") or {},
                  evaluate_base=lambda s: {"refusal_rate": 0.5})
    results = run_pending(survey, steps, show_progress=False)
    assert [r["status"] for r in results] == ["failed", "failed"]  # both roles were attempted
    assert "`no-such-command` exited with status 2" in results[0]["errors"][0]  # the failing command, named in the role's errors
    assert survey.pending() == ROLES[:2]  # failed roles are retried on the next run


def test_find_metrics_reads_the_evaluation_layout(tmp_path):
    ev = tmp_path / "eval" / "greedy-1"
    ev.mkdir(parents=True)
    rec = lambda suite, group, metric, value, judge="keyword": {"suite": suite, "group": group, "metric": metric, "judge": judge, "value": value}  # noqa: E731
    suites = {
        "advbench": {"records": [rec("advbench", "harmful", "refusal_rate", 0.2), rec("advbench", "harmful", "refusal_rate", 0.9, "gcg")]},
        "probes": {"records": [rec("probes", "harmful", "refusal_rate", 0.3), rec("probes", "harmless", "compliance_rate", 1.0)]},
        "jailbreak": {"records": [rec("jailbreak", "aim", "refusal_rate", 0.0)]},
        "margin": {"records": [rec("margin", "harmful", "margin", -0.3, ""), rec("margin", "harmful", "margin_positive", 0.1, "")]},
        "rolebench": {"records": [rec("rolebench", "SPE", "rouge_l", 20.0, ""), rec("rolebench", "RAW", "rouge_l", 23.0, "")]},
    }
    (ev / "metrics.json").write_text(json.dumps({"model": "m", "generation": {"decoding": "greedy"}, "suites": suites}))
    found = find_metrics(tmp_path)
    assert found == pytest.approx({"refusal_rate": 0.25, "rouge_l": 21.5, "refusal_margin": -0.3})
    assert find_metrics(tmp_path / "missing") == {}


def test_slurm_submission_through_submitit_local_executor(tmp_path, tiny_model_dir, traits_csv):
    submitit = pytest.importorskip("submitit")
    out = tmp_path / "slurm-survey"
    cmd = [sys.executable, "-m", "sarft_core", "survey", "--roles", "Sister Alma Reyes,Captain Nell Corran", "--screen", "--limit", "2",
           "--exact", "--model", str(tiny_model_dir), "--traits", "csv", "--traits-csv", str(traits_csv), "--slurm",
           "--slurm-cluster", "local", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "submitted 2 job(s)" in proc.stdout
    jobs = [json.loads(l) for l in (out / "logs.jsonl").read_text().splitlines() if '"slurm"' in l][0]["jobs"]
    for job_id in jobs:  # wait for the local "cluster" to finish each job
        submitit.LocalJob(folder=out / "slurm" / "%j", job_id=job_id).result()
    agg = subprocess.run(cmd[:-5] + ["--out", str(out), "--aggregate-only"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert agg.returncode == 0, agg.stderr[-2000:]
    assert sorted(pd.read_csv(out / "table.csv")["role"]) == ["Captain Nell Corran", "Sister Alma Reyes"]


def test_role_without_samples_is_recorded_and_others_go_on(tmp_path, traits_csv):
    data = tmp_path / "one_role.jsonl"
    data.write_text('{"role": "Sister Alma Reyes", "input": "Hello?", "output": "Peace be with you."}\n')
    cfg = SurveyConfig(roles=ROLES[:2], mode=SCREEN, data=[str(data)], trait_source="csv", trait_csv=str(traits_csv))
    survey = open_survey(tmp_path / "s", cfg)
    steps = Steps(score=lambda ctx: {"samples": len(ctx.samples), "flagged": 0, "flagged_fraction": 0.0, "mean_margin": 0.0})
    results = {r["role"]: r for r in run_pending(survey, steps, show_progress=False)}
    assert results["Baron Vex Morrow"]["status"] == "failed" and "unknown role" in results["Baron Vex Morrow"]["errors"][0]
    assert results["Sister Alma Reyes"]["status"] == "ok"
