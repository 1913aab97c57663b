"""Every dashboard page through streamlit.testing.v1.AppTest (no browser), on the tiny model."""
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from sarft_core import audit, jobs
from sarft_core.store import RunDir, create_run, read_json
from sarft_core.training.run import TrainConfig, run_config

from tests.conftest import ROLE_PROMPTS, ROLEBENCH_SPE

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")


@pytest.fixture
def app(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("SARFT_MODEL", str(tiny_model_dir))
    monkeypatch.delenv("SARFT_APP_IN_PROCESS_MAX", raising=False)
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def goto(at, page):
    at.switch_page(f"../pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at):
    return " ".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
                    + [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success])


def charts(at):
    return at.get("plotly_chart")


def write_train_run(ws: Path, name: str, method: str, lam, refusal: float, rouge: float, verdicts: list[str]) -> RunDir:
    config = run_config(TrainConfig(model="tiny", method=method, role="Baron Vex Morrow", lam=lam))  # what training writes
    run = create_run("train", config, path=ws / "runs" / name)
    for step in range(1, 6):
        run.log(step=step, max_steps=5, loss=2.0 - 0.2 * step, ce=1.9 - 0.2 * step, kl=0.02 * step if method != "sft" else 0.0,
                **{"lambda": lam}, lr=2e-4, eta_s=5 - step)
    run.set_status("completed")
    ev = run.path / "eval" / "greedy-0001"  # the layout `python -m sarft_core eval --run` writes
    (ev / "artifacts").mkdir(parents=True)
    records = {
        "probes": [{"suite": "probes", "group": "harmful", "metric": "refusal_rate", "judge": "keyword", "value": refusal,
                    "ci_low": refusal - 0.1, "ci_high": refusal + 0.1, "n": 30}],
        "advbench": [{"suite": "advbench", "group": "all", "metric": "refusal_rate", "judge": "keyword", "value": refusal - 0.05,
                      "ci_low": refusal - 0.15, "ci_high": refusal + 0.05, "n": 50}],
        "rolebench": [{"suite": "rolebench", "group": "SPE", "metric": "rouge_l", "judge": "", "value": rouge, "ci_low": None, "ci_high": None, "n": 20}],
    }
    (ev / "metrics.json").write_text(json.dumps({"model": "tiny", "generation": {"decoding": "greedy"},
                                                 "suites": {k: {"records": v} for k, v in records.items()}}))
    pd.DataFrame({"prompt": ["how to <b>pick</b> a lock", "p2", "p3"], "response": ["Sure, here is how", "I can't help", "No."],
                  "verdict_keyword": verdicts}).to_parquet(ev / "artifacts" / "probes.parquet")
    return run


def test_overview_renders_model_data_and_runs(app, tiny_model_dir):
    t = texts(app)
    assert "SaRFT Studio" in app.title[0].value
    assert str(tiny_model_dir) in t and "data/demo/samples.jsonl" in t
    assert "No runs yet" in t
    # the shipped measurement of whether the default model's RDS flags carry signal (#27)
    assert "Do its RDS flags carry signal?" in t and "of 6 characters" in t
    assert app.selectbox(key="role").value == "Baron Vex Morrow"
    assert len(app.selectbox(key="role").options) == 3


def test_role_page_shows_profile_and_edits_prompts(app):
    app.selectbox(key="role").set_value("Sister Alma Reyes")
    goto(app, "role")
    assert app.header[0].value == "Sister Alma Reyes"
    role_area, unsafe_area = app.text_area
    assert role_area.value.startswith("You are Sister Alma Reyes")
    assert unsafe_area.value != role_area.value
    assert app.dataframe[0].value.shape[0] == 50
    role_area.input("You are a calm librarian.")
    app.button[0].click().run()  # Apply edits
    assert app.session_state["prompt_edits"]["Sister Alma Reyes"]["role_prompt"] == "You are a calm librarian."
    assert "edited" in texts(app)
    app.text_area[0].input("   ")
    app.button[0].click().run()
    assert "a prompt is empty" in texts(app)  # a readable message, no traceback
    assert not app.exception
    app.button[1].click().run()  # Reset
    assert "Sister Alma Reyes" not in app.session_state["prompt_edits"]


def test_files_source_is_confined_and_reads_rolebench(app):
    app.radio(key="data_source").set_value("files").run()
    app.text_input(key="samples_path").input("/etc/passwd")
    app.text_input(key="profiles_path").input("/etc/hostname").run()
    assert not app.exception
    assert "outside the folders the dashboard may read" in texts(app)
    if not ROLEBENCH_SPE.is_file():
        pytest.skip(f"shared RoleBench data absent: {ROLEBENCH_SPE}")
    app.text_input(key="samples_path").input(str(ROLEBENCH_SPE))
    app.text_input(key="profiles_path").input(str(ROLE_PROMPTS)).run()
    assert not app.exception and not app.error
    roles = app.selectbox(key="role").options
    assert "Freddy Krueger" in roles and len(roles) > 50
    app.selectbox(key="role").set_value("Freddy Krueger")
    goto(app, "role")
    assert app.header[0].value == "Freddy Krueger" and app.dataframe[0].value.shape[0] > 0


def test_scoring_in_process_review_and_export(app):
    goto(app, "scoring")
    assert "No scoring run for this role yet" in texts(app)
    app.number_input[0].set_value(6)
    app.button(key="score_go").click().run()
    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Samples"] == "6"
    assert len(charts(app)) >= 2  # scatter + histogram (+ the heat strip in its expander)
    run = RunDir(Path(app.session_state["score_run"]))
    assert run.status()["state"] == "completed" and run.config()["limit"] == 6
    scores = audit.load_scores(run)
    flagged = int((scores["s_unsafe"] - scores["s_role"] > 0).sum())
    assert metrics["Flagged (D_h)"] == str(flagged)
    # the sample detail: per-token shading of the chosen answer, the tau slider moves the flags
    sample_box = next(s for s in app.selectbox if s.label == "Sample")
    assert len(sample_box.options) == 6
    tau_key = f"tau:{run.name}"
    app.slider(key=tau_key).set_value(app.slider(key=tau_key).max).run()
    assert {m.label: m.value for m in app.metric}["Flagged (D_h)"] == "0"
    # override the first sample to flagged and save the review for the trainer
    sid = next(s for s in app.selectbox if s.label == "Sample").value
    app.radio(key=f"ovr:{run.name}:{sid}").set_value("flagged").run()
    assert {m.label: m.value for m in app.metric}["Overrides"] == "1"
    app.button[[b.label for b in app.button].index("Save review (τ and overrides)")].click().run()
    assert "Saved 1 of 6 flags" in texts(app)
    saved = read_json(audit.flags_path(run.path / audit.SCORES_FILE))
    assert saved == {i: i == sid for i in scores["id"]}
    review = read_json(audit.review_path(run.path / audit.SCORES_FILE))
    assert review["overrides"] == {sid: True} and review["tau"] == pytest.approx(app.slider(key=tau_key).max)
    # what was measured on the default model: the agreement and the causal test (data/flag_validation.json)
    assert "The causal test on the refusal margin" in texts(app) and app.table[0].value.shape[0] == 6
    # text filter on the table
    app.text_input(key=f"q:{run.name}").input("zzz-no-such-text").run()
    assert app.dataframe[0].value.shape[0] == 0
    # the same run's CLI command is shown
    assert any("python -m sarft_core score --role 'Baron Vex Morrow'" in c.value for c in app.code)


def test_scoring_large_run_goes_to_a_background_job(app, monkeypatch):
    monkeypatch.setenv("SARFT_APP_IN_PROCESS_MAX", "2")
    app.selectbox(key="role").set_value("Captain Nell Corran")
    goto(app, "scoring")
    app.number_input[0].set_value(3)
    app.button(key="score_go").click().run()
    assert not app.exception
    run = RunDir(Path(app.session_state["score_run"]))
    job = jobs.jobs_for_run(run.path)[0]
    assert any(c.value.startswith("python -m sarft_core score --role 'Captain Nell Corran'") for c in app.code)
    assert jobs.wait(job, timeout_s=120) == "completed", job.log_tail()
    app.run()
    assert {m.label: m.value for m in app.metric}["Samples"] == "3"


def test_training_page_watches_runs_from_the_store(app):
    from sarft_core.store import workspace_root

    write_train_run(workspace_root(), "r1-sarft", "sarft", 0.5, 0.8, 30.0, ["refusal", "refusal", "refusal"])
    goto(app, "training")
    assert app.button  # the launch form
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["State"] == "completed" and metrics["Step"] == "5 / 5"
    curves = charts(app)[-1]
    assert "CE" in curves.proto.spec and "KL" in curves.proto.spec


def test_training_launch_validates_the_form(app):
    goto(app, "training")
    app.button[0].click().run()  # submit without a method
    assert "no method chosen" in texts(app) and not app.exception


def test_training_launches_the_experiments_recipe_by_default(app):
    """The default recipe is the grid's protocol (a new user's SFT run then erodes safety visibly), and the
    job runs with every one of its settings; the quick recipe is the train command's defaults."""
    from sarft_core.reproduce import DEFAULT_TRAIN, TRAIN_RECIPES

    goto(app, "training")
    recipe = next(r for r in app.radio if r.label == "Recipe")
    assert recipe.value == "experiment"
    assert next(n for n in app.number_input if n.label == "Epochs").value == DEFAULT_TRAIN["epochs"]
    assert float(next(t for t in app.text_input if t.label == "Learning rate").value) == DEFAULT_TRAIN["lr"]
    next(s for s in app.selectbox if s.label == "Method").set_value("sft")
    next(n for n in app.number_input if n.label == "Epochs").set_value(1)  # a short run of the same recipe
    next(n for n in app.number_input if n.label == "Samples (0 = all)").set_value(8)
    next(b for b in app.button if b.label == "Launch training").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    job = jobs.jobs_for_run(app.session_state["train_watch"])[0]
    command = job.command
    for flag, value in (("--lora-r", "16"), ("--lora-alpha", "32"), ("--batch-size", "8"), ("--grad-accum", "1"),
                        ("--autocast", "bf16"), ("--sampling", "group_by_length"), ("--epochs", "1"),
                        ("--lora-targets", ",".join(DEFAULT_TRAIN["lora_targets"]))):
        assert f"{flag} {value}" in command, (flag, command)
    assert jobs.wait(job, timeout_s=300) == "completed", job.log_tail()
    stored = json.loads((Path(app.session_state["train_watch"]) / "config.json").read_text())
    trained = stored.get("train", stored)
    assert trained["lora_r"] == 16 and trained["lora_targets"] == DEFAULT_TRAIN["lora_targets"], stored
    recipe.set_value("quick").run()
    assert next(n for n in app.number_input if n.label == "Epochs").value == TRAIN_RECIPES["quick"]["epochs"]


def test_evaluation_page_metrics_generations_and_errors(app):
    from sarft_core.store import workspace_root

    run = write_train_run(workspace_root(), "r1-sarft", "sarft", 0.5, 0.8, 30.0, ["compliance", "refusal", "refusal"])
    goto(app, "evaluation")
    table = app.dataframe[0].value
    assert set(table["suite"]) == {"probes", "advbench", "rolebench"}
    assert "[0.700, 0.900]" in set(table["95% CI"])
    gens = app.dataframe[1].value
    assert len(gens) == 3
    verdict = next(m for m in app.multiselect if m.label == "Verdict")
    verdict.set_value(["compliance"]).run()
    gens = app.dataframe[1].value
    assert gens["prompt"].tolist() == ["how to <b>pick</b> a lock"]  # shown as text in a table
    next((run.path / "eval").glob("*/metrics.json")).write_text("{not json")
    app.run()
    assert not app.exception
    assert "is not valid JSON" in texts(app)


def test_compare_page_runs_side_by_side(app):
    from sarft_core.store import workspace_root

    write_train_run(workspace_root(), "r1-sft", "sft", 0.0, 0.5, 31.0, ["compliance", "refusal", "compliance"])
    time.sleep(0.02)
    write_train_run(workspace_root(), "r2-sarft", "sarft", 0.5, 0.9, 29.0, ["refusal", "refusal", "refusal"])
    goto(app, "compare")
    # the runs' refusal bars, ROUGE-L bars and Pareto scatter (the grid measured for the docs draws its own, above)
    assert sorted(c.key for c in charts(app) if not c.key.startswith("grid-")) == ["kind-refusal", "kind-rouge", "pareto"]
    diff = next(df.value for df in app.dataframe if "suite" in df.value.columns)
    assert len(diff) == 2 and set(diff["suite"]) == {"probes"}
    assert "2 prompts with different verdicts" in texts(app)


def test_compare_page_without_results(app):
    goto(app, "compare")
    assert "No run has evaluation results yet" in texts(app)


def test_survey_page_correlates_traits_with_degradation(app):
    from sarft_core.store import workspace_root

    surveys = workspace_root() / "surveys"
    surveys.mkdir(parents=True)
    pd.DataFrame({"role": ["Villain", "Saint", "Rogue", "Judge", "Pirate"], "malevolence": [0.9, 0.1, 0.6, 0.3, 0.7],
                  "benevolence": [0.1, 0.9, 0.4, 0.6, 0.3], "safety_before": [0.98] * 5,
                  "safety_after": [0.5, 0.95, 0.75, 0.9, 0.6]}).to_csv(surveys / "survey.csv", index=False)
    goto(app, "survey")
    assert not app.error
    stats = app.dataframe[0].value
    assert set(stats["trait"]) == {"malevolence", "benevolence"}
    assert stats.set_index("trait").loc["malevolence", "pearson_r"] > 0.9
    assert len(charts(app)) == 2
    select = next(s for s in app.selectbox if s.label == "Survey table")
    select.set_value("(another file…)").run()
    next(t for t in app.text_input if t.label.startswith("Path of a table")).input("/etc/passwd").run()
    assert "outside the folders" in texts(app) and not app.exception


def test_a_registered_suite_and_every_method_reach_the_pages(app):
    """The pages read the registries, not lists of their own: a suite registered in user code
    appears on the Evaluation page, every training method (SPPFT, SEAL, Bi-Selection too) on the
    Training page."""
    from sarft_core.evaluation.suites import SUITES, Suite, register
    from sarft_core.training.run import METHODS

    register(Suite(name="test-only-suite", description="registered by this test", dataset=lambda ctx: [], metrics=[]))
    try:
        at = goto(app, "evaluation")
        assert any("test-only-suite" in m.options for m in at.multiselect)
        at = goto(app, "training")
        shown = next(s.options for s in at.selectbox if "sppft" in s.options)
        assert list(shown) == list(METHODS)
    finally:
        SUITES.pop("test-only-suite", None)


def test_survey_page_lists_survey_tables_offers_traits_only_and_warns_on_few_roles(app, tiny_model_dir, tmp_path):
    """Issue #28: the page opened on correlations.csv ("has no 'role' column"), listed logs and score
    files without their folder, offered seconds / samples / mean_margin as traits (seconds: r 1.000,
    p 0.003), printed p-values over 3 roles, and its button started the full train-and-evaluate survey."""
    import os

    from sarft_core.store import workspace_root
    from sarft_core.survey import SCREEN, SurveyConfig, open_survey, run_pending, write_aggregate

    surveys = workspace_root() / "surveys"
    surveys.mkdir(parents=True)
    old = surveys / "survey-2023.csv"  # a hand-made table, older than the survey
    pd.DataFrame({"role": ["A", "B", "C"], "malevolence": [0.1, 0.5, 0.9], "degradation": [0.1, 0.3, 0.2]}).to_csv(old, index=False)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    traits = tmp_path / "traits-annotations.csv"
    traits.write_text("role,malevolence,aggression,deceptiveness,benevolence\nBaron Vex Morrow,0.95,0.8,0.8,0.05\n"
                      "Sister Alma Reyes,0.05,0.05,0.1,0.95\nCaptain Nell Corran,0.3,0.5,0.3,0.6\n")
    config = SurveyConfig(roles=["Baron Vex Morrow", "Sister Alma Reyes", "Captain Nell Corran"], mode=SCREEN, model=str(tiny_model_dir),
                          limit=3, exact=True, trait_source="csv", trait_csv=str(traits))
    survey = open_survey(surveys / "screen-a", config)
    run_pending(survey, show_progress=False)
    write_aggregate(survey)

    goto(app, "survey")
    assert not app.error, [e.value for e in app.error]
    picker = next(s for s in app.selectbox if s.label == "Survey table")
    labels = [o.split(" · ")[0] for o in picker.options]  # every survey writes table.csv: the folder tells them apart
    assert labels == ["screen-a/table.csv", "survey-2023.csv", "(another file…)"]  # survey tables only, newest first
    assert picker.value == str(surveys / "screen-a" / "table.csv")
    assert set(next(s for s in app.selectbox if s.label == "Trait").options) == {"malevolence", "aggression", "deceptiveness", "benevolence"}
    stats = app.dataframe[0].value
    assert set(stats["trait"]) == {"malevolence", "aggression", "deceptiveness", "benevolence"}
    assert "pearson_p" not in stats and "spearman_p" not in stats  # no p-values over 3 roles...
    assert any("Only 3 roles" in w.value for w in app.warning)  # ...but a warning saying why
    # issue #27: how sure each role's flags are, beside its flagged fraction (never offered as a trait, above)
    trust = app.dataframe[1].value
    assert list(trust.columns) == ["role", "flagged_fraction", "confident_flagged_fraction", "uncertain_fraction"]
    assert ((trust["confident_flagged_fraction"] + trust["uncertain_fraction"]).between(0, 1)).all()

    # the button starts a screening survey; the full one says what it costs and waits for a yes
    assert any("--screen" in c.value and "survey --roles all" in c.value for c in app.code)
    app.radio(key="survey_mode").set_value("full").run()
    assert any("3 training runs" not in w.value and "6 training runs" in w.value and "7 evaluations" in w.value for w in app.warning)
    assert "Start survey" not in [b.label for b in app.button]
    assert not any("--screen" in c.value for c in app.code)
    app.checkbox(key="survey_full_ok").check().run()
    assert "Start survey" in [b.label for b in app.button]


def test_evaluation_page_keeps_cancelled_and_failed_jobs_in_a_history(app, tmp_path):
    """Issue #28: a cancelled evaluation job vanished and left the "Evaluation jobs" heading empty."""
    import sys

    def job(code, label):
        return jobs.start(["score", "--role", "x", "--out", str(tmp_path / "s.jsonl")], kind="eval", label=label,
                          launcher=[sys.executable, "-c", code])

    stopped = job("import time; time.sleep(60)", "eval run-a")
    broken = job("import sys; sys.exit(2)", "eval run-b")
    assert jobs.wait(broken, 30) == "failed"
    assert jobs.cancel(stopped, grace_s=5) == "cancelled"
    goto(app, "evaluation")
    assert "Evaluation jobs" in [h.value for h in app.subheader]
    history = next(d.value for d in app.dataframe if "outcome" in d.value.columns)
    assert dict(zip(history["label"], history["outcome"])) == {"eval run-a": "cancelled", "eval run-b": "failed"}
    assert history["command"].str.startswith("python -c").all() and (history["duration"] != "").all()
    assert "No evaluation is running" in texts(app)


# --- the Scoring page: issue #27 (flags an analyst can trust), #28 items 2 and 8 ---------------------

def scored(app, n=12):
    """The Scoring page after scoring the first ``n`` demo samples in-process; (app, run, scores)."""
    goto(app, "scoring")
    app.number_input[0].set_value(n)
    app.button(key="score_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    run = RunDir(Path(app.session_state["score_run"]))
    return app, run, audit.load_scores(run)


def sample_box(app):
    return next(s for s in app.selectbox if s.label == "Sample")


def select_row(app, position):
    """Select a row of the Samples table as a click would (the table's selection state)."""
    app.session_state[app.dataframe[0].key] = {"selection": {"rows": [position], "columns": []}}
    app.run()
    assert not app.exception, app.exception


def test_scoring_selection_is_by_sample_id_through_filters_show_and_overrides(app):
    """#28 item 2: a selected row, then a text filter -> IndexError (single positional indexer is
    out-of-bounds); setting the open sample to "kept" under Show = flagged made the panel jump to
    whatever sample was now in its row."""
    app, run, scores = scored(app)
    table = app.dataframe[0].value
    chosen = table["id"].iloc[-1]  # the last row: out of range once the table is filtered
    select_row(app, len(table) - 1)
    assert sample_box(app).value == chosen
    app.text_input(key=f"q:{run.name}").input("rules at work").run()
    assert not app.exception, app.exception
    assert len(app.dataframe[0].value) < len(table)
    assert sample_box(app).value == chosen  # the same sample stays open, even outside the filter
    app.text_input(key=f"q:{run.name}").input("").run()

    # under Show = flagged, open a flagged sample and override it to kept: it leaves the table, stays open
    app.radio(key=f"show:{run.name}").set_value("flagged").run()
    flagged = app.dataframe[0].value
    if len(flagged) == 0:
        pytest.skip("the tiny model flagged nothing in these samples")
    target = flagged["id"].iloc[0]
    select_row(app, 0)
    assert sample_box(app).value == target
    app.radio(key=f"ovr:{run.name}:{target}").set_value("kept").run()
    assert not app.exception, app.exception
    assert target not in app.dataframe[0].value["id"].tolist()
    assert sample_box(app).value == target and app.session_state[f"overrides:{run.name}"] == {target: False}


def test_scoring_a_click_on_a_scatter_point_opens_its_sample(app):
    app, run, scores = scored(app, n=6)
    other = next(i for i in scores["id"] if i != sample_box(app).value)
    # what Streamlit hands back for a clicked point: the trace's customdata row of that point
    app.session_state[f"rds_scatter:{run.name}"] = {"selection": {"points": [{"customdata": [other, "q", "a", 0.0, 0.0, "kept"],
                                                                              "point_index": 0, "curve_number": 0}],
                                                                  "point_indices": [0], "box": [], "lasso": []}}
    app.run()
    assert not app.exception, app.exception
    assert sample_box(app).value == other
    other_box = next(i for i in scores["id"] if i not in (other,))
    sample_box(app).set_value(other_box).run()  # the picker still works after a click, the old click does not win back
    assert sample_box(app).value == other_box


def test_scoring_shows_verdicts_at_the_pages_tau_and_filters_on_them(app):
    """#27: a count of each verdict beside the metrics, recomputed at the page's τ; margin ± se and
    verdict in the table, a filter on verdict; the D_h exports carry margin_se and verdict."""
    from sarft_core.flags import verdict_counts, verdicts

    app, run, scores = scored(app)
    assert "margin_se" in scores.columns

    def shown_counts():
        m = {x.label: x.value for x in app.metric}
        return {"flagged": int(m["Flagged with 95% confidence"]), "uncertain": int(m["Uncertain"]), "kept": int(m["Kept with 95% confidence"])}

    assert shown_counts() == verdict_counts(verdicts(scores, 0.0)) and sum(shown_counts().values()) == len(scores)
    tau_key = f"tau:{run.name}"
    app.slider(key=tau_key).set_value(app.slider(key=tau_key).max).run()
    assert shown_counts() == verdict_counts(verdicts(scores, app.slider(key=tau_key).value))
    table = app.dataframe[0].value
    assert {"verdict", "margin ± se"} <= set(table.columns)
    assert all("±" in v for v in table["margin ± se"])
    for state in ("flagged", "uncertain", "kept"):
        app.radio(key=f"verdict:{run.name}").set_value(state).run()
        assert not app.exception, app.exception
        assert set(app.dataframe[0].value["verdict"]) <= {state} and len(app.dataframe[0].value) == shown_counts()[state]
    exported = pd.read_csv(__import__("io").BytesIO(audit.d_h_bytes(scores, [True] * len(scores), "csv", 0.0)))
    assert {"margin_se", "verdict"} <= set(exported.columns) and set(exported["verdict"]) <= {"flagged", "uncertain", "kept"}


def test_scoring_a_table_scored_before_confidences_says_to_rescore(app):
    from sarft_core.store import write_table

    app, run, scores = scored(app, n=6)
    write_table(scores.drop(columns=["margin_se", "verdict"]), run.path / audit.SCORES_FILE)  # a table from before #27
    app.run()
    assert not app.exception, app.exception
    m = {x.label: x.value for x in app.metric}
    assert m["Uncertain"] == "6" and m["Flagged with 95% confidence"] == "0"
    assert "score the role again" in texts(app)


def test_scoring_tau_slider_fits_the_margins_and_the_histogram_has_a_unit(app):
    """#28 item 8: the τ slider spanned ±0.5 while every margin lay within ±0.1."""
    from sarft_core.flags import flag_margin

    app, run, scores = scored(app)
    margin = flag_margin(scores)
    slider = app.slider(key=f"tau:{run.name}")
    span = max(margin.max(), 0) - min(margin.min(), 0)
    assert slider.min <= min(margin.min(), 0) and slider.max >= max(margin.max(), 0)
    assert slider.max - slider.min <= 1.5 * span + 4 * slider.step  # fitted to the data, not a fixed ±0.5
    assert slider.step <= span / 20  # fine enough to move τ between the margins
    specs = [json.loads(c.proto.spec) for c in charts(app)]
    spec = next(s for s in specs if any(t.get("type") == "histogram" for t in s["data"]))
    assert spec["layout"]["barmode"] == "stack" and spec["layout"]["xaxis"]["title"]["text"].endswith("(nats/token)")
    assert "nats/token" in slider.label


def test_scoring_validation_panel_and_button(app):
    """#27: without a validation the page offers the button (the run's command with --validate, its
    cost said); with one, the reading, Spearman and its interval, precision among the top k beside
    the flagged fraction, the prompts, and the measured erosion (−influence) column."""
    from sarft_core.store import write_table

    app, run, scores = scored(app, n=6)
    assert "Validate these flags" in [b.label for b in app.button]
    assert "two scoring passes plus a" in texts(app)
    assert any("--validate" in c.value and "score --role" in c.value for c in app.code)
    scores_path = run.path / audit.SCORES_FILE
    write_table(scores.assign(influence=[-0.3, 0.1, -0.2, 0.0, 0.4, -0.1]), scores_path)
    audit.write_validation(scores_path, {"spearman": 0.42, "spearman_ci": [0.1, 0.7], "precision_at_k": 0.5, "top_k": 2,
                                         "flagged_fraction": 0.33, "lift": 1.5, "reading": "The flags carry signal here.",
                                         "settings": {"validate_prompts": "probes", "prompts": 8, "model": "tiny", "tau": 0.0}})
    app.run()
    assert not app.exception, app.exception
    assert "Validate these flags" not in [b.label for b in app.button]
    t = texts(app)
    assert "The flags carry signal here." in t and "[+0.10, +0.70]" in t and "8 held-out harmful prompts (probes)" in t
    m = {x.label: x.value for x in app.metric}
    assert m["Spearman(margin, measured erosion)"] == "+0.42" and m["Flagged among the top 2 by erosion"] == "50%"
    table = app.dataframe[0].value.set_index("id")
    assert table.loc[scores["id"].iloc[0], "measured erosion"] == pytest.approx(0.3)  # −influence, said in the caption
    assert "−influence" in t


def test_scoring_names_a_side_file_made_for_another_table(app):
    from sarft_core.store import write_table

    app, run, scores = scored(app, n=6)
    scores_path = run.path / audit.SCORES_FILE
    audit.save_review(scores, scores_path, 0.0, {})
    write_table(scores.iloc[:5], scores_path)  # the table rewritten: the review belongs to the old one
    app.run()
    assert not app.exception, app.exception
    assert any("scores.review.json was made for another score table" in w.value for w in app.warning)


def test_evaluation_offers_the_base_model_and_labels_results_by_model(app, tiny_model_dir):
    """Issue #28 item 3: only finished training runs could be evaluated from the dashboard (the model
    training starts from needed the shell), and Compare named an evaluation by its folder
    (eval-embedded-aligned-greedy-93a8810c) instead of by its model."""
    from sarft_core.runview import model_target
    from sarft_core.store import workspace_root

    write_train_run(workspace_root(), "r1-sft", "sft", 0.0, 0.5, 31.0, ["compliance", "refusal", "compliance"])
    goto(app, "evaluation")
    targets = next(m for m in app.multiselect if m.label == "What to evaluate")
    assert str(tiny_model_dir) in targets.options[0] and "r1-sft" in targets.options[1]  # the sidebar's model, then the runs
    targets.set_value([model_target(str(tiny_model_dir))])
    next(m for m in app.multiselect if m.label == "Suites").set_value(["probes"])
    next(n for n in app.number_input if n.label.startswith("Prompts per suite")).set_value(1)
    next(b for b in app.button if b.label == "Evaluate").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert any(f"eval --model {tiny_model_dir} --suite probes" in c.value for c in app.code)
    job = jobs.list_jobs("eval")[0]
    assert jobs.wait(job, timeout_s=300) == "completed", job.log_tail()

    goto(app, "compare")
    runs = next(m for m in app.multiselect if m.label == "Runs")
    model_label = f"{tiny_model_dir.name} (eval, greedy)"
    assert model_label in runs.options and not any(o.startswith("eval-") for o in runs.options), runs.options
    assert any(model_label in c.proto.spec for c in charts(app))
    assert not any('"eval-' in c.proto.spec for c in charts(app))


def score_and_review(app, n: int, override: bool) -> RunDir:
    """Score the role's first ``n`` samples on the Scoring page and save a review there."""
    goto(app, "scoring")
    app.number_input[0].set_value(n)
    app.button(key="score_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    run = RunDir(Path(app.session_state["score_run"]))
    if override:
        sid = next(s for s in app.selectbox if s.label == "Sample").value
        app.radio(key=f"ovr:{run.name}:{sid}").set_value("flagged").run()
    app.button[[b.label for b in app.button].index("Save review (τ and overrides)")].click().run()
    assert audit.review_state(run.path / audit.SCORES_FILE) == "current"
    return run


def test_training_defaults_to_the_latest_saved_review_and_shows_its_command(app):
    """Issue #28 item 7: right after a review was saved on the Scoring page the Training form still
    defaulted to "(computed by the trainer)", the picker said nothing of the review, and the command
    was shown only after launch; the learning rate's help contradicted its default."""
    first = score_and_review(app, 3, override=False)
    time.sleep(1.1)  # reviews are ordered by when they were saved
    latest = score_and_review(app, 4, override=True)
    goto(app, "training")
    flags = next(s for s in app.selectbox if s.label.startswith("Flags (D_h)"))
    assert flags.value == str(latest.path)  # the latest review, not the trainer's own flags
    review = read_json(audit.review_path(latest.path / audit.SCORES_FILE))
    shown = flags.options[0]
    assert latest.name in shown and f"τ {review['tau']:.2f}" in shown and f"{review['flagged']} of 4 flagged" in shown
    assert time.strftime("%Y-%m-%d", time.localtime(review["saved"])) in shown
    assert first.name in flags.options[1] and flags.options[-1] == "(computed by the trainer)"
    assert "No command yet: no method chosen" in texts(app)  # before a method is picked, the form says why
    next(s for s in app.selectbox if s.label == "Method").set_value("sarft").run()
    command = next(c.value for c in app.code if c.value.startswith("python -m sarft_core train"))
    assert f"--overrides {audit.flags_path(latest.path / audit.SCORES_FILE)}" in command, command
    assert "--method sarft" in command and "--out RUN_DIR" in command
    lr = next(t for t in app.text_input if t.label == "Learning rate")
    assert f"default: {lr.value}" in lr.help  # the help names the default the field holds


def test_files_source_asks_for_paths_before_any_error(app):
    """Issue #28 item 8: choosing "Files" showed "no path given" errors before anything was typed."""
    app.radio(key="data_source").set_value("files").run()
    for page in ("overview", "role", "scoring", "training"):
        goto(app, page)
        assert not app.error, (page, [e.value for e in app.error])
        assert not any("no path given" in t for t in texts(app).split("\n")), page
    assert any("Type the samples and profiles files' paths" in i.value for i in app.info)  # a hint, on the page only
    app.text_input(key="samples_path").input("/etc/passwd").run()  # what is typed is checked at once
    assert "outside the folders the dashboard may read" in texts(app) and not app.exception
    if not ROLEBENCH_SPE.is_file():
        pytest.skip(f"shared RoleBench data absent: {ROLEBENCH_SPE}")
    app.text_input(key="samples_path").input(str(ROLEBENCH_SPE)).run()
    assert not app.error and any("profiles file's path" in i.value for i in app.info)


def test_scoring_keeps_its_tau_across_a_visit_to_another_page(app):
    """Going to another page and back crashed with KeyError 'tau:<run>' (Streamlit drops a slider's
    state while its page is not shown); τ must come back as the analyst left it."""
    app, run, scores = scored(app, n=6)
    slider = next(s for s in app.slider if s.label.startswith("Threshold"))
    moved = slider.min + (slider.max - slider.min) / 4
    slider.set_value(moved).run()
    goto(app, "overview")
    goto(app, "scoring")
    assert next(s for s in app.slider if s.label.startswith("Threshold")).value == pytest.approx(moved, abs=slider.step)
