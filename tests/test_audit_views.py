"""Score runs and their review, run views read defensively, path confinement, the `app` command."""
import json

import pandas as pd
import pytest

from sarft_core import audit, runview
from sarft_core.cli import build_parser
from sarft_core.cli.app import streamlit_command
from sarft_core.data import DEMO_PROFILES, DEMO_SAMPLES, get_profile, load_profiles, load_samples
from sarft_core.errors import SarftError
from sarft_core.paths import confine
from sarft_core.store import create_run, read_json
from sarft_core.training.run import TrainConfig, run_config


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    return tmp_path / "ws"


def test_score_in_process_review_and_export(workspace, tiny_lm, score_cache, tmp_path):
    profile = get_profile(load_profiles(DEMO_PROFILES), "Baron Vex Morrow")
    samples = load_samples(DEMO_SAMPLES, role=profile.name, limit=5)
    run = audit.create_score_run(profile, None, "tiny", limit=5)
    seen = []
    audit.score_in_process(tiny_lm, samples, profile, run, progress=lambda d, t: seen.append((d, t)))
    assert run.status()["state"] == "completed" and seen[-1] == (5, 5)
    scores = audit.load_scores(run)
    tokens = audit.load_token_ratios(run)
    assert len(scores) == 5 and set(tokens) == set(scores["id"])
    assert all(len(t["tokens"]) == len(t["ratio"]) for t in tokens.values())
    # the recorded profile reproduces the run from the command line
    assert json.loads((run.path / "profiles.json").read_text())[0]["profile"] == profile.role_prompt
    assert audit.score_args(run)[:4] == ["score", "--role", "Baron Vex Morrow", "--profiles"]
    assert "--limit" in audit.score_args(run) and audit.score_args(run)[-1] == "--with-tokens"

    path = run.path / audit.SCORES_FILE
    first = scores["id"].iloc[0]
    final = audit.save_review(scores, path, tau=100.0, overrides={first: True})
    assert final == {i: i == first for i in scores["id"]}
    assert read_json(audit.flags_path(path)) == final
    assert audit.load_review(path) == (100.0, {first: True})
    with pytest.raises(SarftError, match="unknown sample ids"):
        audit.save_review(scores, path, 0.0, {"nope": True})
    out = audit.export_d_h(scores, pd.Series(list(final.values())), tmp_path / "dh.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [first] and "margin" in rows[0]
    csv = audit.d_h_bytes(scores, list(final.values()), "csv").decode()
    assert csv.splitlines()[0].startswith("id,role,input,output") and len(csv.splitlines()) == 2
    with pytest.raises(SarftError):
        audit.export_d_h(scores, list(final.values()), tmp_path / "dh.txt")


def test_load_scores_of_an_unfinished_run_is_a_clear_error(workspace):
    run = create_run("score", {"role": "x"})
    with pytest.raises(SarftError, match="has no scores yet"):
        audit.load_scores(run)


def test_runview_reads_metrics_defensively(workspace):
    run = create_run("train", run_config(TrainConfig(method="sarft", role="Baron Vex Morrow", lam=0.5)))
    assert runview.read_metrics(run).empty and runview.read_generations(run).empty and not runview.has_eval(run)
    ev = run.path / "eval" / "greedy-0001"
    (ev / "artifacts").mkdir(parents=True)
    records = [{"suite": "probes", "group": "harmful", "metric": "refusal_rate", "judge": "keyword", "value": 0.7},
               {"suite": "rolebench", "group": "SPE", "metric": "rouge_l", "judge": "", "value": 25.0, "n": 10}]
    (ev / "metrics.json").write_text(json.dumps({"model": "m", "generation": {"decoding": "greedy"},
                                                 "suites": {"probes": {"records": records[:1]}, "rolebench": {"records": records[1:]}}}))
    pd.DataFrame({"prompt": ["p"], "response": ["r"], "verdict_keyword": ["refusal"]}).to_parquet(ev / "artifacts" / "probes.parquet")
    assert runview.has_eval(run)
    m = runview.read_metrics(run)
    assert list(m.columns[:6]) == runview.METRIC_COLUMNS and m["ci_low"].isna().all()
    g = runview.read_generations(run)
    assert g.iloc[0][["suite", "prompt", "verdict"]].tolist() == ["probes", "p", "refusal"]
    pts = runview.pareto_points([run])
    assert pts.iloc[0]["roleplay"] == 25.0 and pts.iloc[0]["safety"] == 0.7
    assert "λ=0.5" in runview.run_label(run)
    (ev / "metrics.json").write_text('["oops"]')
    with pytest.raises(SarftError, match="not an evaluation result"):
        runview.read_metrics(run)
    (ev / "metrics.json").write_text("[{")
    with pytest.raises(SarftError, match="not valid JSON"):
        runview.read_metrics(run)


def test_disagreements_side_by_side():
    a = pd.DataFrame({"suite": ["s"] * 3, "prompt": ["p1", "p2", "p3"], "response": ["r1", "r2", "r3"], "verdict": ["refusal", "compliance", "refusal"]})
    b = a.assign(verdict=["refusal", "refusal", "compliance"], response=["x1", "x2", "x3"])
    d = runview.disagreements(a, b, "SFT", "SaRFT")
    assert d["prompt"].tolist() == ["p2", "p3"]
    assert d.loc[0, "response SFT"] == "r2" and d.loc[0, "response SaRFT"] == "x2"


def test_confine_paths(workspace, tmp_path):
    inside = workspace / "data.jsonl"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_text("{}\n")
    assert confine(str(inside)) == inside.resolve()
    assert confine("data/demo/samples.jsonl") == DEMO_SAMPLES.resolve()  # relative to the project root
    with pytest.raises(SarftError, match="outside the folders"):
        confine("/etc/passwd")
    with pytest.raises(SarftError, match="outside the folders"):
        confine(str(workspace / ".." / ".." / "etc"), must_exist=False)
    link = workspace / "escape.jsonl"
    link.symlink_to("/etc/hostname")
    with pytest.raises(SarftError, match="outside the folders"):
        confine(str(link))  # a link cannot point outside
    with pytest.raises(SarftError, match="does not exist"):
        confine(str(workspace / "missing.jsonl"))
    with pytest.raises(SarftError, match="no path"):
        confine("  ")


def test_app_command_binds_to_localhost_by_default():
    args = build_parser().parse_args(["app"])
    assert args.host == "127.0.0.1" and args.port == 8501
    cmd = streamlit_command(args.port, args.host)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app/main.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    with pytest.raises(SarftError, match="out of range"):
        streamlit_command(70000, "127.0.0.1")


def test_flag_margin_is_defined_without_the_reference_pass():
    """Regression: scores made without the reference pass (--passes role,unsafe) have NaN
    s_role / s_unsafe; the flag margin is logp_unsafe - logp_role, so the dashboard's flags,
    histogram and D_h export must still see it (s_unsafe - s_role was NaN: nothing flagged)."""
    from sarft_core import plots

    nan = float("nan")
    scores = pd.DataFrame({
        "id": ["a", "b", "c"], "role": "r", "input": ["q1", "q2", "q3"], "output": ["x", "y", "z"],
        "logp_ref": nan, "logp_role": [-2.0, -1.0, -3.0], "logp_unsafe": [-1.0, -2.0, -0.5],
        "s_role": nan, "s_unsafe": nan, "harmful": [True, False, True], "n_tokens": 3,
    })
    flags = audit.effective_flags(scores, tau=0.0)
    assert flags.tolist() == [True, False, True] == scores["harmful"].tolist()  # as the scorer flagged them
    assert audit.effective_flags(scores, tau=1.5).tolist() == [False, False, True]
    assert sorted(x for t in plots.margin_histogram(scores).data for x in t.x) == [-1.0, 1.0, 2.5]
    d_h = audit.d_h(scores, flags)
    assert d_h["id"].tolist() == ["a", "c"] and d_h["margin"].tolist() == [1.0, 2.5]
    from sarft_core.flags import flag_margin, is_flagged
    from sarft_core.training.selection import rds_flags

    rows = scores.to_dict("records")
    assert [flag_margin(r) for r in rows] == [1.0, -1.0, 2.5] and is_flagged(rows[0]) and not is_flagged(rows[0], tau=1.0)
    assert rds_flags(rows) == {"a": True, "b": False, "c": True}  # training's D_h: the same rule
    hover = [m for t in plots.rds_scatter(scores).data if t.customdata is not None for m in t.customdata[:, 3]]
    assert sorted(float(m) for m in hover) == [-1.0, 1.0, 2.5]  # the scatter's hover margin too


def test_tau_bounds_fit_the_margins_and_hold_zero_and_the_saved_tau():
    """#28 item 8: the τ slider spanned ±0.5 (steps of 0.01) while every margin lay within ±0.1."""
    lo, hi, step = audit.tau_bounds([-0.08, 0.02, 0.095, float("nan")], saved_tau=0.0)
    assert -0.12 < lo <= -0.08 and 0.095 <= hi < 0.13 and step <= 0.001
    lo, hi, step = audit.tau_bounds([0.01, 0.02], saved_tau=0.3)  # the saved τ and 0 are always reachable
    assert lo <= 0.0 and hi >= 0.3
    lo, hi, step = audit.tau_bounds([-0.003, 0.002])
    assert step <= 0.0001 and hi - lo < 0.01  # a tiny model's margins are still told apart
    lo, hi, step = audit.tau_bounds([])  # nothing finite: a small range around 0
    assert lo < 0 < hi and step > 0
    assert round(lo / step) * step == pytest.approx(lo)
    assert audit.tau_format(0.01) == "%.2f" and audit.tau_format(0.0001) == "%.4f"


def test_samples_table_and_its_filters_carry_verdicts():
    from sarft_core.flags import verdicts

    scores = pd.DataFrame({"id": ["a", "b", "c"], "input": ["q rules", "q2", "q3"], "output": ["x", "y", "z"],
                           "s_role": [0.0] * 3, "s_unsafe": [0.2, -0.1, 0.01], "logp_role": [-1.0] * 3,
                           "logp_unsafe": [-0.8, -1.1, -0.99], "margin_se": [0.01, 0.01, float("nan")]})
    table = audit.samples_table(scores, [True, False, True], {"c": True}, tau=0.0)
    assert table["id"].tolist() == ["a", "c", "b"]  # highest margin first
    assert table["verdict"].tolist() == verdicts(scores, 0.0).iloc[[0, 2, 1]].tolist() == ["flagged", "uncertain", "kept"]
    assert table["margin ± se"].tolist() == ["+0.200 ± 0.010", "+0.010 ± ?", "-0.100 ± 0.010"]
    assert table.set_index("id").loc["c", "override"] == "flagged" and "measured erosion" not in table
    assert audit.filter_samples(table, "RULES")["id"].tolist() == ["a"]
    assert audit.filter_samples(table, verdict="uncertain")["id"].tolist() == ["c"]
    assert audit.filter_samples(table, show="kept", verdict="kept")["id"].tolist() == ["b"]
    assert audit.filter_samples(table, show="flagged", verdict="kept").empty
    validated = audit.samples_table(scores.assign(influence=[-0.5, 0.2, 0.0]), [True] * 3, {})
    assert validated.set_index("id")["measured erosion"].to_dict() == {"a": 0.5, "b": -0.2, "c": -0.0}
    d_h = audit.d_h(scores, [True, True, False], tau=0.0)
    assert d_h["verdict"].tolist() == ["flagged", "kept"] and d_h["margin_se"].tolist() == [0.01, 0.01]
