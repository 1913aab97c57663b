"""RunConfig: the one typed view of a run's config.json, as the writers store it and every reader sees it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sarft_core import audit, report
from sarft_core.cli.eval import check_same_setting
from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles
from sarft_core.errors import SarftError
from sarft_core.evaluation.generation import GenerationConfig
from sarft_core.runconfig import RunConfig, ScoreSettings
from sarft_core.runconfig import runs_of_kind
from sarft_core.runview import run_label, runs_table
from sarft_core.store import RunDir, create_run
from sarft_core.training.run import TrainConfig, run_config

ROOT = Path(__file__).resolve().parents[1]


def test_a_training_run_reads_back_what_training_wrote(tmp_path):
    cfg = TrainConfig(method="sarft", role="John Doe", model="tiny", lam=0.7, lora_targets=["q_proj", "k_proj"], epochs=2.0)
    run = create_run("train", run_config(cfg), path=tmp_path / "run")
    assert json.loads(run.config_path.read_text()) == run_config(cfg)
    read = RunConfig.of(run)
    assert (read.kind, read.model, read.method, read.role, read.lam) == ("train", "tiny", "sarft", "John Doe", 0.7)
    assert read.train == cfg and read.eval is None and read.score is None
    assert RunConfig.from_dict(read.to_dict()) == read
    assert read.label("run") == "run (sarft, John Doe, λ=0.7)"


@pytest.mark.parametrize("method", ["sft", "sppft"])
def test_methods_without_a_kl_term_record_lambda_0_and_their_labels_leave_it_out(tmp_path, method):
    run = create_run("train", run_config(TrainConfig(method=method, role="John Doe", lam=0.7)), path=tmp_path / method)
    read = RunConfig.of(run)
    assert read.lam == 0.0 and read.train.lam == 0.7  # the loss's weight, and the option as given
    assert run_label(run) == f"{method} ({method}, John Doe)"


def test_lambda_of_older_runs_comes_from_their_training_options():
    stored = {"kind": "train", "model": "", "method": "sarft", "role": "John Doe", "train": {"lam": 0.3, "role": "John Doe"}}
    assert RunConfig.from_dict(stored).lam == 0.3
    assert RunConfig.from_dict(dict(stored, **{"lambda": 0.9})).lam == 0.9  # the top-level key wins where written
    assert RunConfig.from_dict(dict(stored, **{"lambda": True})).lam is None  # not a number
    assert RunConfig.from_dict(dict(stored, train={"lam": "0.3"})).lam is None
    # a grid's protocol is stored under the same key: its λ shows, though it is no training run
    grid = RunConfig.from_dict({"kind": "reproduce", "methods": ["sft"], "train": {"lam": 0.5, "epochs": 3.0}})
    assert grid.lam == 0.5 and grid.train is None and grid.label("g") == "g"


def test_an_evaluation_config_round_trips_and_older_ones_read_without_a_fingerprint(tmp_path):
    generation = GenerationConfig(max_new_tokens=16).identity()
    written = RunConfig.for_evaluation("embedded", "abc123", "/runs/r1", generation, ["probes", "margin"], [{"judge": "keyword"}])
    run = create_run("eval", written.to_dict(), path=tmp_path / "ev")
    read = RunConfig.read(run.path)
    assert read == written and read.eval.model_fingerprint == "abc123" and read.eval.generation == generation
    assert read.method == "" and read.lam is None and read.train is None
    older = RunConfig.from_dict({"kind": "eval", "model": "m", "generation": {"decoding": "greedy"}})
    assert older.eval.model_fingerprint is None and older.eval.suites == () and "model_fingerprint" not in older.to_dict()
    assert RunConfig.from_dict({"kind": "eval", "model_fingerprint": 7}).eval.model_fingerprint == ""  # recorded, unreadable


def test_check_same_setting_reads_the_recorded_model_as_before(tmp_path):
    generation = GenerationConfig(max_new_tokens=16).identity()
    out = tmp_path / "ev"
    create_run("eval", RunConfig.for_evaluation("m", "fp1", None, generation, ["probes"], []).to_dict(), path=out)
    check_same_setting(out, "m", "fp1", generation)  # same weights and setting: resumes
    with pytest.raises(SarftError, match="model 'm': its weights changed"):
        check_same_setting(out, "m", "fp2", generation)
    with pytest.raises(SarftError, match="max_new_tokens: 16 -> 8"):
        check_same_setting(out, "m", "fp1", dict(generation, max_new_tokens=8))
    (out / "config.json").write_text(json.dumps({"kind": "eval", "model": "m", "generation": generation}))  # before fingerprints
    check_same_setting(out, "m", "any", generation)
    with pytest.raises(SarftError, match="model: 'm' -> 'other'"):
        check_same_setting(out, "other", "any", generation)
    (out / "config.json").write_text(json.dumps({"kind": "eval", "model": "m", "model_fingerprint": 5, "generation": generation}))
    with pytest.raises(SarftError, match="its weights changed"):
        check_same_setting(out, "m", "fp1", generation)
    (out / "config.json").write_text(json.dumps({"kind": "score", "role": "r"}))
    with pytest.raises(SarftError, match="holds a score run, not an evaluation"):
        check_same_setting(out, "m", "fp1", generation)


def test_a_score_run_records_its_settings_through_runconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    profile = get_profile(load_profiles(DEMO_PROFILES), "Baron Vex Morrow")
    run = audit.create_score_run(profile, "data.jsonl", "tiny", limit=5, profiles_source="profiles.json")
    read = RunConfig.of(run)
    assert (read.kind, read.role, read.model) == ("score", "Baron Vex Morrow", "tiny")
    assert read.score == ScoreSettings("data.jsonl", "profiles.json", 5, profile.role_prompt, profile.unsafe_prompt)
    assert set(json.loads(run.config_path.read_text())) == {"kind", "role", "model", "data", "profiles_source", "limit",
                                                            "role_prompt", "unsafe_prompt"}
    assert audit.score_args(run)[:3] == ["score", "--role", "Baron Vex Morrow"]
    assert audit.score_args(run)[5:9] == ["--data", "data.jsonl", "--limit", "5"]
    assert runs_of_kind("score", role="Baron Vex Morrow") == [run] and runs_of_kind("score", role="Someone") == []
    assert runs_of_kind("train") == []


def test_wrongly_typed_and_damaged_configs_read_as_missing_fields(tmp_path):
    assert RunConfig.from_dict([1, 2]) == RunConfig() and RunConfig.from_dict(None) == RunConfig()
    hostile = RunConfig.from_dict({"kind": "train", "model": 5, "method": [1], "role": {"a": 1}, "train": "x", "lambda": "high"})
    assert (hostile.kind, hostile.model, hostile.method, hostile.role, hostile.lam) == ("train", "", "", "", None)
    assert hostile.options is None and hostile.train is None and hostile.profiles is None
    assert RunConfig.from_dict({"kind": 3}).kind == "" and RunConfig.from_dict({"kind": "score", "limit": "many"}).score.limit is None
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    assert RunConfig.read(run.path) == RunConfig()  # no config.json yet
    run.config_path.write_text('{"kind": "tra')
    assert RunConfig.read(run.path) is None and RunConfig.of(run) == RunConfig()
    table = runs_table([run])
    assert table.iloc[0][["kind", "role", "method"]].tolist() == ["?", "", ""] and table.iloc[0]["lambda"] is None


def test_flat_settings_put_the_training_options_beside_the_top_level_fields(tmp_path):
    cfg = TrainConfig(method="sarft", role="John Doe", model="tiny", lam=0.25, profiles="mine.json")
    run = create_run("train", run_config(cfg), path=tmp_path / "run")
    read = RunConfig.of(run)
    flat = read.flat()
    assert flat["lambda"] == 0.25 and flat["lam"] == 0.25 and flat["peft"] == "lora" and flat["kind"] == "train"
    assert read.profiles == "mine.json"
    shown = dict(report.settings(run))
    assert shown["model"] == "tiny" and shown["lam"] == 0.25 and shown["lora_r"] == 32 and "train" not in shown
    grid = RunConfig.from_dict({"kind": "reproduce", "model": "m", "profiles": "p.json", "train": {"model": "ignored", "epochs": 3}})
    assert grid.flat()["model"] == "m" and grid.flat()["epochs"] == 3 and grid.profiles == "p.json"


def test_the_readers_import_neither_torch_nor_the_training_code():
    code = ("import sys; import sarft_core.runconfig, sarft_core.runview, sarft_core.report, sarft_core.report_sources; "
            "print(sorted(m for m in ('torch', 'sarft_core.training.run') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_an_evaluation_is_labelled_by_its_model_and_labels_shown_together_stay_apart(tmp_path):
    """Issue #28 item 3: Compare showed `eval-embedded-aligned-greedy-93a8810c`."""
    from sarft_core.runview import run_labels

    def evaluation(name, model, decoding="greedy"):
        config = RunConfig.for_evaluation(model, "fp-" + name, None, {"decoding": decoding}, ["probes"], [])
        return create_run("eval", config.to_dict(), path=tmp_path / name)

    aligned = evaluation("eval-embedded-aligned-greedy-93a8810c", "embedded-aligned")
    local = evaluation("eval-tiny-greedy-1234", str(tmp_path / "models" / "tiny-llama"))
    assert run_label(aligned) == "embedded-aligned (eval, greedy)"
    assert run_label(local) == "tiny-llama (eval, greedy)"  # a folder by its name, not its whole path
    twice = evaluation("eval-embedded-aligned-greedy-ffff0000", "embedded-aligned")  # the same model, other settings
    labels = run_labels([aligned, twice, local])
    assert len(set(labels.values())) == 3 and labels[str(local.path)] == "tiny-llama (eval, greedy)"
    assert all(label.startswith("embedded-aligned (eval, greedy)") for label in (labels[str(aligned.path)], labels[str(twice.path)]))
