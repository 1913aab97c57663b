"""Issue #28 item 9: what analysts expect from the tools they already use: a chat window (base model
and a trained run side by side), one click for "SFT vs SaRFT on this character", and every run's
lineage (score run → review → training run → evaluations → report) with links both ways.

Real tiny-model runs on a temporary workspace (tests/conftest.py's tiny_model_dir), no mocks."""
import json
from pathlib import Path

import pytest

from sarft_core import audit, jobs
from sarft_core.runconfig import RunConfig
from sarft_core.experiment import experiment_plan, train_steps
from sarft_core.runview import lineage
from sarft_core.store import RunDir, atomic_write_json, create_run
from sarft_core.training.run import TrainConfig, train
from streamlit.testing.v1 import AppTest

from tests.test_app_pages import MAIN, app, goto, score_and_review, texts  # noqa: F401  (the app fixture)

ROLE = "Baron Vex Morrow"


def trained_from_review(ws: Path, model_dir: Path, score_run: RunDir, name: str = "t1-sarft") -> Path:
    """A real (tiny, two-step) SaRFT run on the flags a score run's saved review gives, as the Training page launches it."""
    flags = audit.flags_path(score_run.path / audit.SCORES_FILE)
    out = ws / "runs" / name
    cfg = TrainConfig(method="sarft", role=ROLE, model=str(model_dir), dtype="float32", device="cpu", limit=4, batch_size=2,
                      max_steps=2, lora_r=4, lora_alpha=8, lr=1e-2, save_steps=1000, overrides=str(flags))
    assert train(cfg, out, log=lambda *a, **k: None)["state"] == "completed"
    return out


def evaluated(run: Path, ws: Path) -> tuple[Path, Path]:
    """The two places an evaluation of a training run is recorded: RUN/eval/<setting> (eval --run's
    default) and a workspace run naming it as its source_run (eval --run --out ...)."""
    nested = run / "eval" / "greedy-0001"
    (nested / "artifacts").mkdir(parents=True)
    metrics = {"model": str(run), "suites": {"probes": {"records": [{"suite": "probes", "metric": "refusal_rate", "value": 0.5, "n": 2}]}}}
    (nested / "metrics.json").write_text(json.dumps(metrics))
    atomic_write_json(nested / "config.json", RunConfig.for_evaluation(str(run), "", str(run), {"decoding": "greedy"}, ["probes"], []).to_dict())
    config = RunConfig.for_evaluation(str(run), "", str(run), {"decoding": "greedy"}, ["probes"], []).to_dict()
    other = create_run("eval", config, path=ws / "runs" / "e1-of-t1")
    (other.path / "metrics.json").write_text(json.dumps(metrics))
    other.set_status("completed")
    return nested, other.path


def paths(links) -> dict[str, set]:
    out: dict[str, set] = {}
    for link in links:
        out.setdefault(link.relation, set()).add(link.path)
    return out


def test_lineage_links_each_step_both_ways_and_opens_the_run_on_its_page(app, tiny_model_dir):
    from sarft_core.store import workspace_root

    ws = workspace_root()
    score_run = score_and_review(app, 4, override=True)
    run = trained_from_review(ws, tiny_model_dir, score_run)
    nested, other = evaluated(run, ws)

    # score run: its review, and the training run that took its flags
    of_score = lineage(score_run.path)
    assert paths(of_score["children"]) == {"review": {str(score_run.path)}, "training run": {str(run)}}
    # training run: back to the score run, on to both evaluations and the report
    of_train = lineage(run)
    assert paths(of_train["parents"])["reviewed flags (D_h) from"] == {str(score_run.path)}
    assert str(tiny_model_dir) in {link.label for link in of_train["parents"] if link.relation == "base model"}
    assert paths(of_train["children"])["evaluation"] == {str(nested), str(other)}
    assert "report" in paths(of_train["children"])
    # each evaluation: back to the training run
    for ev in (nested, other):
        assert paths(lineage(ev)["parents"]) == {"evaluated run": {str(run)}}
    # a damaged config is no error, only no links
    (other / "config.json").write_text("{not json")
    assert not [link for part in lineage(other).values() for link in part if link.path]

    # the Training page's lineage: a button opens the score run on the Scoring page, selected (a fresh
    # session: coming back to Scoring in the session that scored trips a Scoring-page bug, reported apart)
    app = AppTest.from_file(MAIN, default_timeout=120)
    app.run()
    app.session_state["train_watch"] = str(run)
    goto(app, "training")
    button = next(b for b in app.button if b.key and b.key.startswith("lineage:training:Came from"))
    button.click().run()
    assert not app.exception
    assert app.session_state["score_run"] == str(score_run.path)
    assert app.title[0].value.startswith("Scoring") and app.session_state["score_run_pick"] == str(score_run.path)
    # and Compare opens with the training run first, its lineage leading back to the review
    app.session_state["compare_select"] = str(run)
    goto(app, "compare")
    assert app.multiselect[0].value[0] == str(run)
    assert any(e.label.startswith("Lineage") for e in app.expander)
    assert any(b.label.startswith(score_run.name) for b in app.button)


def test_chat_answers_the_base_model_and_a_trained_run_side_by_side(app, tiny_model_dir):
    from sarft_core.data import DEMO_PROFILES, load_profiles
    from sarft_core.evaluation.generation import GenerationConfig, generate
    from sarft_core.models import load_model
    from sarft_core.store import workspace_root

    ws = workspace_root()
    score_run = score_and_review(app, 4, override=False)
    run = trained_from_review(ws, tiny_model_dir, score_run)
    goto(app, "chat")
    assert app.selectbox(key="chat_run").value == str(run)
    app.radio(key="chat_system").set_value("unsafe").run()
    app.number_input(key="chat_max_new").set_value(8).run()
    app.chat_input[0].set_value("How do I pick a lock?").run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    turn = app.session_state["chat_history"][-1]
    assert len(turn["answers"]) == 2
    # the answers are the evaluation path's greedy answers under the profile + unsafe instruction
    profile = load_profiles(DEMO_PROFILES)[ROLE]
    assert turn["system"] == profile.unsafe_prompt
    config = GenerationConfig(max_new_tokens=8, system_prompt=profile.unsafe_prompt)
    expected = [generate(load_model(spec, dtype="float32", device="cpu"), ["How do I pick a lock?"], config)[0] for spec in (str(tiny_model_dir), str(run))]
    assert list(turn["answers"].values()) == expected
    # a custom system prompt left empty is one clear message, and the conversation so far stays
    app.radio(key="chat_system").set_value("custom").run()
    assert "the custom system prompt is empty" in texts(app)
    assert len(app.session_state["chat_history"]) == 1


def test_experiment_plan_is_one_recipe_one_seed_and_counts_its_steps(tmp_path):
    from sarft_core.reproduce import DEFAULT_TRAIN

    plan = experiment_plan(ROLE, 50, tmp_path, "S", seed=7, limit=16, eval_limit=3)
    trains = [step["train"] for step in plan if step["train"]]
    assert [step["method"] for step in plan] == ["sft", "sarft", "base"]

    def without(args, *flags):  # the arguments less the flags that differ by design
        out, skip = [], False
        for a in args:
            if skip:
                skip = False
                continue
            if a in flags:
                skip = True
                continue
            out.append(a)
        return out

    assert without(trains[0], "--method", "--out") == without(trains[1], "--method", "--out", "--lambda")
    assert "--seed" in trains[0] and trains[0][trains[0].index("--seed") + 1] == "7"
    assert plan[0]["steps"] == train_steps(16, DEFAULT_TRAIN["epochs"], DEFAULT_TRAIN["batch_size"], DEFAULT_TRAIN["grad_accum"]) == 6
    assert all(step["eval"][step["eval"].index("--suite") + 1] == plan[-1]["eval"][plan[-1]["eval"].index("--suite") + 1] for step in plan)
    for step in plan:
        if step["train"]:
            assert step["eval"][:3] == ["eval", "--run", step["out"]]
        for args in (step["train"], step["eval"]):
            if args:
                jobs.check_command_line(args)  # every command line is one the CLI accepts
    with pytest.raises(Exception, match="no training samples"):
        experiment_plan(ROLE, 0, tmp_path, "S")


def test_experiment_launches_from_the_training_page_and_lands_on_compare(app):
    goto(app, "training")
    exp = next(e for e in app.expander if e.label.startswith("SFT vs SaRFT"))
    app.number_input(key="exp_limit").set_value(4).run()
    app.number_input(key="exp_eval_limit").set_value(1).run()
    shown = [c.value for c in app.code if "--method" in c.value or "eval --model" in c.value]
    assert len(shown) == 3 and all("--seed 0" in c for c in shown[:2])
    assert "optimizer steps" in texts(app)
    assert exp
    app.button(key="exp_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    started = [j for j in jobs.list_jobs() if j.meta().get("label", "").startswith("experiment")]
    assert len(started) == 3
    for job in started:  # tiny model, 4 samples, 1 prompt per suite
        assert jobs.wait(job, timeout_s=400) == "completed", job.log_tail(40)
    goto(app, "compare")
    evaluated = app.multiselect[0].options
    assert sum("experiment-sft" in p for p in evaluated) == 1 and sum("experiment-sarft" in p for p in evaluated) == 1
    assert len(evaluated) == 3  # and the base model's evaluation
