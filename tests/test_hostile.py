"""Hostile but realistic inputs (issue 14): silent wrong results, tracebacks, wrong messages.

Every test here checks a property of the outcome: a wrong result is refused with one SarftError
(CLI: exit 2, no traceback) naming the problem and the fix, and nothing finished is lost.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sarft_core.cli import main
from sarft_core.errors import SarftError
from sarft_core.store import RunDir, read_jsonl

from tests.conftest import ROOT, SHARED_DATA

ROLE = "Baron Vex Morrow"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def _tiny_copy(src: Path, dest: Path, edit=None) -> Path:
    """A copy of the tiny model, its weights changed by ``edit(model)`` (a real, different model)."""
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dest)
    if edit is not None:
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
        with torch.no_grad():
            edit(model)
        model.save_pretrained(dest, safe_serialization=True)
    return dest


@pytest.fixture(scope="module")
def overflow_model(tiny_model_dir, tmp_path_factory) -> Path:
    """Finite weights whose logits overflow to inf (so its log-probs and losses are NaN)."""
    def edit(model):
        model.model.norm.weight.fill_(3e38)
        model.model.embed_tokens.weight.mul_(100.0)
    return _tiny_copy(tiny_model_dir, tmp_path_factory.mktemp("overflow") / "m", edit)


@pytest.fixture(scope="module")
def other_model(tiny_model_dir, tmp_path_factory) -> Path:
    def edit(model):
        torch.manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return _tiny_copy(tiny_model_dir, tmp_path_factory.mktemp("other") / "m", edit)


# ---- 1. eval answers belong to one model and one generation setting -------------------------

def _eval(capsys, model, out, *extra):
    return cli(capsys, "eval", "--model", model, "--suite", "probes", "--limit", "1", "--judge", "keyword",
               "--data-dir", SHARED_DATA, "--out", out, *extra)


def test_eval_into_an_existing_out_never_serves_another_setting_or_model(tiny_model_dir, other_model, tmp_path, capsys):
    out = tmp_path / "ev"
    code, _, err = _eval(capsys, tiny_model_dir, out, "--max-new-tokens", "2")
    assert code == 0, err
    first = read_jsonl(out / "artifacts" / "generations" / "probes.jsonl")
    config = json.loads((out / "config.json").read_text())

    code, _, err = _eval(capsys, tiny_model_dir, out, "--max-new-tokens", "6")
    assert code == 2 and "max_new_tokens: 2 -> 6" in err and "--out" in err
    code, _, err = _eval(capsys, other_model, out, "--max-new-tokens", "2")
    assert code == 2 and "other settings" in err and "model" in err
    # refused before anything was touched: the first model's record and answers are intact
    assert json.loads((out / "config.json").read_text()) == config
    assert read_jsonl(out / "artifacts" / "generations" / "probes.jsonl") == first

    code, _, err = _eval(capsys, tiny_model_dir, out, "--max-new-tokens", "2")  # the same command resumes
    assert code == 0, err
    assert read_jsonl(out / "artifacts" / "generations" / "probes.jsonl") == first  # nothing regenerated


def test_evaluator_cache_keys_hold_the_model_and_the_setting(tiny_lm, tmp_path):
    from sarft_core.evaluation.generation import GenerationConfig
    from sarft_core.evaluation.runner import Evaluator
    from sarft_core.evaluation.suites import SuiteContext, get_suite
    from sarft_core.store import create_run

    ctx = SuiteContext(limit=1)
    suite = get_suite("probes", ctx)
    run = create_run("eval", {}, path=tmp_path / "ev")
    items = suite.dataset(ctx)[:1]

    def answers(fingerprint, tokens):
        ev = Evaluator(run, lambda: tiny_lm, GenerationConfig(max_new_tokens=tokens), [], model_fingerprint=fingerprint)
        return ev.generate(suite, items, None)

    a = answers("model-a", 2)
    assert answers("model-a", 2) == a  # served from the cache
    assert answers("model-b", 2)[0]["key"] != a[0]["key"]
    assert answers("model-a", 5)[0]["key"] != a[0]["key"]
    assert len(read_jsonl(run.artifacts / "generations" / "probes.jsonl")) == 3


def test_eval_run_refuses_an_evaluation_folder(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    assert _eval(capsys, tiny_model_dir, out, "--max-new-tokens", "2")[0] == 0
    code, _, err = cli(capsys, "eval", "--run", out, "--suite", "probes", "--limit", "1")
    assert code == 2 and "eval run, not a training run" in err
    code, _, err = cli(capsys, "score", "--role", ROLE, "--model", out, "--limit", "1", "--out", tmp_path / "s.jsonl")
    assert code == 2 and "eval run, not a model" in err


def test_eval_out_that_is_a_training_run_is_refused_untouched(tmp_path, tiny_model_dir, capsys):
    from sarft_core.store import create_run

    run = create_run("train", {"model": "x"}, path=tmp_path / "train")
    before = run.config_path.read_bytes()
    code, _, err = _eval(capsys, tiny_model_dir, run.path)
    assert code == 2 and "train run, not an evaluation" in err
    assert run.config_path.read_bytes() == before


# ---- 2. non-finite numbers never end as `completed` -----------------------------------------

@pytest.mark.parametrize("option,value,allowed", [
    ("--lambda", "inf", "[0, 1000000]"), ("--lambda", "nan", "[0"), ("--tau", "nan", "finite"), ("--lr", "nan", "(0, 1]"),
    ("--epochs", "nan", "(0"), ("--epochs", "inf", "(0"), ("--seed", "-1", "[0, 4294967295]"), ("--lora-alpha", "-5", "(0"),
    ("--lora-dropout", "2", "[0, 1)"), ("--answer-index", "-1", ">= 0"), ("--max-steps", "0", "-1"),
    ("--drop-fraction", "nan", "[0, 1)"), ("--device", "bogus", "cpu"),
])
def test_train_refuses_bad_numbers_naming_the_range(option, value, allowed, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--role", ROLE, "--model", tiny_model_dir, "--out", out, option, value)
    assert code == 2 and option.lstrip("-").split("-")[0] in err and allowed in err, err
    assert not out.exists()  # refused before a run directory exists


def test_every_numeric_training_option_declares_its_range():
    from sarft_core.training import TrainConfig
    from sarft_core.validation import ranges

    declared = ranges(TrainConfig)
    import dataclasses

    numeric = [f.name for f in dataclasses.fields(TrainConfig) if f.type in ("int", "float", "int | None", "float | None")]
    assert numeric and set(numeric) <= set(declared), set(numeric) - set(declared)
    from sarft_core.evaluation.generation import GenerationConfig

    assert {"max_new_tokens", "batch_size", "rose_alpha", "max_prompt_tokens"} <= set(ranges(GenerationConfig))


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_eval_rose_alpha_must_be_finite(value, tiny_model_dir, tmp_path, capsys):
    code, _, err = _eval(capsys, tiny_model_dir, tmp_path / "ev", "--decoding", "rose", "--rose-alpha", value)
    assert code == 2 and "--rose-alpha must be a finite number in [0, 100]" in err
    assert not (tmp_path / "ev").exists()


def test_a_nan_loss_stops_training_as_failed_with_no_weights(overflow_model, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--method", "sft", "--role", ROLE, "--model", overflow_model, "--out", out,
                       "--limit", "4", "--batch-size", "2", "--grad-accum", "1", "--max-steps", "3", "--lora-r", "2",
                       "--dtype", "float32", "--device", "cpu")
    assert code == 2 and "non-finite" in err
    status = RunDir(out).status()
    assert status["state"] == "failed" and "non-finite" in status["error"]
    assert not (out / "artifacts" / "adapter").exists()
    assert all(math.isfinite(r["loss"]) for r in RunDir(out).logs())  # the broken step is not logged as a result


def test_scoring_a_model_with_non_finite_log_probs_is_refused_not_0_flagged(overflow_model, tmp_path, capsys, score_cache):
    out = tmp_path / "s.jsonl"
    code, printed, err = cli(capsys, "score", "--role", ROLE, "--model", overflow_model, "--limit", "2", "--out", out,
                             "--dtype", "float32", "--device", "cpu")
    assert code == 2 and "non-finite" in err and "flagged" not in printed
    assert not out.exists()


def test_generation_with_non_finite_logits_is_refused_not_empty_answers(overflow_model, tmp_path, capsys):
    out = tmp_path / "ev"
    code, _, err = _eval(capsys, overflow_model, out, "--max-new-tokens", "2", "--device", "cpu")
    assert code == 2 and "non-finite" in err
    assert RunDir(out).status()["state"] == "failed"


def test_a_model_with_nan_weights_is_refused_at_load(tiny_model_dir, tmp_path):
    from sarft_core.models import load_model

    bad = _tiny_copy(tiny_model_dir, tmp_path / "nan", lambda m: m.model.layers[0].mlp.up_proj.weight.fill_(float("nan")))
    with pytest.raises(SarftError, match="non-finite .* weights.*up_proj"):
        load_model(str(bad), dtype="float32", device="cpu")


# ---- 3. one owner per run directory ---------------------------------------------------------

def test_a_second_train_into_a_busy_out_fails_clearly(tiny_model_dir, tmp_path):
    from sarft_core.training import TrainConfig, train

    out = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sarft_core.store import OwnerLock; "
         f"lock = OwnerLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = TrainConfig(method="sft", role=ROLE, model=str(tiny_model_dir), device="cpu", dtype="float32", limit=2,
                          batch_size=2, grad_accum=1, max_steps=1, lora_r=2)
        with pytest.raises(SarftError, match=rf"in use: another process \(pid {holder.pid}\)"):
            train(cfg, out, log=lambda *_: None)
        assert not (out / "config.json").exists() and not (out / "status.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the OS released the dead owner's lock: the folder is usable again
    status = train(TrainConfig(method="sft", role=ROLE, model=str(tiny_model_dir), device="cpu", dtype="float32", limit=2,
                               batch_size=2, grad_accum=1, max_steps=1, lora_r=2), out, log=lambda *_: None)
    assert status["state"] == "completed"


# ---- 4. survey roles never share a folder ---------------------------------------------------

def _two_similar_roles(tmp_path) -> Path:
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps([{"name": "Vex \U0001F600", "profile": "You are Vex, smiling."},
                                {"name": "Vex \U0001F47F", "profile": "You are Vex, scowling."}]), encoding="utf-8")
    return path


def test_survey_roles_whose_slugs_collide_keep_their_own_results(tmp_path):
    from sarft_core.survey import Steps, SurveyConfig, open_survey, run_pending

    profiles = _two_similar_roles(tmp_path)
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps({"role": r, "input": f"q{i}", "output": f"a{i}"}) + "\n"
                            for r in ("Vex \U0001F600", "Vex \U0001F47F") for i in range(3)), encoding="utf-8")
    roles = ["Vex \U0001F600", "Vex \U0001F47F"]
    survey = open_survey(tmp_path / "sv", SurveyConfig(roles=roles, mode="screen", profiles=str(profiles), data=[str(data)]))

    def score(ctx):  # a real plug-in step: the number depends on the role's own profile
        return {"samples": len(ctx.samples), "flagged": 0, "flagged_fraction": 0.25 if "smiling" in ctx.profile.role_prompt else 0.75}

    run_pending(survey, Steps(score=score), show_progress=False, echo=lambda _l: None)
    assert survey.result_path(roles[0]) != survey.result_path(roles[1])
    assert survey.result(roles[0])["score"]["flagged_fraction"] == 0.25
    assert survey.result(roles[1])["score"]["flagged_fraction"] == 0.75
    assert survey.pending() == []


def test_an_old_survey_with_plain_slugs_stays_readable(tmp_path):
    from sarft_core.survey import Survey, SurveyConfig, legacy_role_slug, open_survey

    survey = open_survey(tmp_path / "sv", SurveyConfig(roles=[ROLE], mode="screen"))
    old = survey.path / "roles" / f"{legacy_role_slug(ROLE)}.json"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps({"role": ROLE, "status": "ok", "score": {"flagged_fraction": 0.5}, "key": survey.role_key(ROLE)}))
    assert survey.is_done(ROLE) and survey.result(ROLE)["score"]["flagged_fraction"] == 0.5
    # a result that records no content key (made before keys) is read, but redone on resume
    old.write_text(json.dumps({"role": ROLE, "status": "ok", "score": {"flagged_fraction": 0.5}}))
    assert survey.result(ROLE)["score"]["flagged_fraction"] == 0.5 and not survey.is_done(ROLE)
    # an old file that belongs to another role (the collision) is never read as this role's result
    other = "Baron Vex Morrow!"
    assert legacy_role_slug(other) == legacy_role_slug(ROLE)
    s2 = Survey(survey.run, SurveyConfig(roles=[other], mode="screen"))
    assert s2.result(other) is None and not s2.is_done(other)


# ---- 5. inputs that silently pick the wrong data --------------------------------------------

def test_score_refuses_to_overwrite_its_own_input(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"role": ROLE, "input": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(3)))
    before = data.read_bytes()
    for out in (data, tmp_path / "." / "d.jsonl"):
        code, _, err = cli(capsys, "score", "--role", ROLE, "--data", data, "--out", out)
        assert code == 2 and "is the --data input file" in err
    os.link(data, tmp_path / "hard.jsonl")
    code, _, err = cli(capsys, "score", "--role", ROLE, "--data", data, "--out", tmp_path / "hard.jsonl")
    assert code == 2 and "is the --data input file" in err
    assert data.read_bytes() == before


def test_a_mistyped_role_column_never_disables_the_role_filter(tmp_path):
    from sarft_core.data import load_samples

    data = tmp_path / "d.csv"
    data.write_text("character,question,answer\nAlice,qa,aa\nBob,qb,ab\n")
    assert [s.input for s in load_samples(data, role="Bob", columns={"role": "character", "input": "question", "output": "answer"})] == ["qb"]
    with pytest.raises(SarftError, match="no column 'charcter' for role"):
        load_samples(data, role="Bob", columns={"role": "charcter", "input": "question", "output": "answer"})
    with pytest.raises(SarftError, match="no column 'ident' for id"):
        load_samples(data, role="Bob", columns={"id": "ident", "role": "character", "input": "question", "output": "answer"})
    with pytest.raises(SarftError, match="unknown --columns field"):
        load_samples(data, role="Bob", columns={"rol": "character", "input": "question", "output": "answer"})


def test_answer_index_out_of_range_is_refused_not_clamped(tmp_path):
    from sarft_core.data import load_samples

    data = tmp_path / "rb.jsonl"
    data.write_text(json.dumps({"role": "A", "question": "q", "generated": ["first", "second"]}) + "\n")
    assert load_samples(data, role="A", answer_index=1)[0].output == "second"
    with pytest.raises(SarftError, match="has 2 answer\\(s\\), so --answer-index 99"):
        load_samples(data, role="A", answer_index=99)
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"role": "A", "input": "q", "output": "only"}) + "\n")
    with pytest.raises(SarftError, match="one answer, not a list"):
        load_samples(plain, role="A", answer_index=3)


@pytest.mark.parametrize("profiles", [
    [{"name": "A", "profile": "one"}, {"name": "A", "profile": "two"}],
    [{"name": "Dr. A", "profile": "one"}, {"name": "dr.  a", "profile": "two"}],
    {"Dr_A": {"role": "one"}, "Dr A": {"role": "two"}},
])
def test_duplicate_role_names_in_a_profiles_file_are_refused(profiles, tmp_path):
    from sarft_core.data import load_profiles

    path = tmp_path / "p.json"
    path.write_text(json.dumps(profiles))
    with pytest.raises(SarftError, match="defined twice"):
        load_profiles(path)


def test_duplicate_json_keys_in_a_profiles_file_are_refused(tmp_path):
    from sarft_core.data import load_profiles

    path = tmp_path / "p.json"
    path.write_text('{"A": "first profile", "A": "second profile"}')
    with pytest.raises(SarftError, match="appears twice"):
        load_profiles(path)


# ---- 9. survey --slurm without SLURM --------------------------------------------------------

def test_survey_slurm_without_slurm_fails_instead_of_running_locally(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch anywhere
    code, out, err = cli(capsys, "survey", "--roles", ROLE, "--screen", "--slurm", "--out", tmp_path / "sv")
    assert code == 2 and "SLURM is not available" in err and "submitted" not in out
    assert not (tmp_path / "sv" / "slurm").exists()


# ---- tracebacks: output locations -----------------------------------------------------------

def _unwritable_outputs(tmp_path) -> dict[str, Path]:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    return {"under a file": a_file / "sub" / "s.jsonl", "under /proc": Path("/proc/sarft-nope/s.jsonl"),
            "read-only /sys": Path("/sys/s.jsonl"), "an existing folder": tmp_path}


def test_score_checks_its_output_location_before_scoring(tmp_path, tiny_model_dir, capsys, score_cache):
    for what, out in _unwritable_outputs(tmp_path).items():
        started = time.time()
        code, _, err = cli(capsys, "score", "--role", ROLE, "--model", tiny_model_dir, "--limit", "2", "--out", out)
        assert code == 2 and "fix:" in err, (what, err)
        assert "free disk space" not in err, (what, err)
        assert not list(Path(score_cache).rglob("*.jsonl")), what  # refused before any sample was scored
    assert time.time() - started < 60


@pytest.mark.parametrize("command", ["eval", "train", "survey"])
def test_run_directories_that_cannot_be_made_fail_clearly(command, tmp_path, tiny_model_dir, capsys):
    outs = _unwritable_outputs(tmp_path)
    for what in ("under a file", "under /proc", "read-only /sys"):
        out = outs[what].parent
        argv = {"eval": ["eval", "--model", tiny_model_dir, "--suite", "probes", "--limit", "1", "--out", out],
                "train": ["train", "--method", "sft", "--role", ROLE, "--model", tiny_model_dir, "--limit", "2", "--out", out],
                "survey": ["survey", "--roles", ROLE, "--screen", "--out", out]}[command]
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "fix:" in err, (what, err)


def test_written_files_keep_plain_write_permissions(tmp_path):
    import pandas as pd

    from sarft_core.store import append_jsonl, atomic_write_json, write_table

    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
        append_jsonl(tmp_path / "l.jsonl", {"x": 1})
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    plain = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    for name in ("a.json", "t.csv", "l.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == plain == 0o640
    os.chmod(tmp_path / "a.json", 0o604)  # replacing a file keeps its own permissions, as a plain write does
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o604


@pytest.mark.parametrize("var", ["SARFT_WORKSPACE", "SARFT_HOME"])
def test_a_file_where_a_folder_is_expected(var, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    monkeypatch.setenv(var, str(a_file))
    if var == "SARFT_WORKSPACE":
        from sarft_core.store import runs_root

        with pytest.raises(SarftError, match="SARFT_WORKSPACE.*is a file, not a folder"):
            runs_root()
    else:
        from sarft_core.models import cache_root

        with pytest.raises(SarftError, match="SARFT_HOME.*is a file, not a folder"):
            cache_root()
    code, _, err = cli(capsys, "app", "--workspace", a_file, "--port", "1")
    assert code == 2 and "is a file, not a folder" in err


# ---- tracebacks: models and devices ---------------------------------------------------------

@pytest.fixture(scope="module")
def broken_models(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    from sarft_core.models import embedded_gguf_path

    d = tmp_path_factory.mktemp("broken")
    out = {}
    (d / "empty.gguf").write_bytes(b"")
    out["empty gguf"] = d / "empty.gguf"
    (d / "garbage.gguf").write_bytes(os.urandom(4096))
    out["garbage gguf"] = d / "garbage.gguf"
    data = embedded_gguf_path().read_bytes()
    (d / "truncated.gguf").write_bytes(data[: len(data) // 4])
    out["truncated gguf"] = d / "truncated.gguf"
    for name, damage in (("truncated safetensors", lambda b: b[: len(b) // 2]), ("garbage safetensors", lambda b: os.urandom(len(b) // 8))):
        m = d / name.replace(" ", "-")
        shutil.copytree(tiny_model_dir, m)
        st = next(m.glob("*.safetensors"))
        st.write_bytes(damage(st.read_bytes()))
        out[name] = m
    for name, text in (("truncated config.json", '{"model_type": "lla'), ("config.json list", "[1, 2]"),
                       ("unknown model_type", None)):
        m = d / name.replace(" ", "-")
        shutil.copytree(tiny_model_dir, m)
        if text is None:
            cfg = json.loads((m / "config.json").read_text())
            cfg["model_type"] = "zorblax-9000"
            text = json.dumps(cfg)
        (m / "config.json").write_text(text)
        out[name] = m
    (d / "notes.txt").write_text("not a model")
    out["a text file"] = d / "notes.txt"
    return out


@pytest.mark.parametrize("case,expected", [
    ("empty gguf", "not a GGUF model file (empty)"), ("garbage gguf", "not a GGUF model file"),
    ("truncated gguf", "could not read"), ("truncated safetensors", "damaged, truncated"),
    ("garbage safetensors", "damaged, truncated"), ("truncated config.json", "config.json is damaged"),
    ("config.json list", "config.json is damaged"), ("unknown model_type", "'zorblax-9000' model, an architecture"),
    ("a text file", "is a file, but not a model"),
])
def test_broken_models_fail_with_one_clear_error(case, expected, broken_models, tmp_path, capsys):
    code, _, err = cli(capsys, "score", "--role", ROLE, "--model", broken_models[case], "--limit", "1", "--out", tmp_path / "s.jsonl")
    assert code == 2 and expected in err, err
    assert "does not exist" not in err and "unreachable offline" not in err


@pytest.mark.parametrize("device,expected", [("bogus", "unknown device"), ("mps", "not supported"), ("meta", "not supported"),
                                             ("cuda:99", "cuda"), ("cpu:7", "unknown device")])
def test_bad_devices_fail_with_one_clear_error(device, expected, tiny_model_dir, tmp_path, capsys):
    for argv in (["score", "--role", ROLE, "--limit", "1", "--out", tmp_path / "s.jsonl"],
                 ["eval", "--suite", "probes", "--limit", "1", "--out", tmp_path / "ev"],
                 ["train", "--method", "sft", "--role", ROLE, "--limit", "2", "--out", tmp_path / "tr"]):
        code, _, err = cli(capsys, *argv, "--model", tiny_model_dir, "--device", device)
        assert code == 2 and expected in err and "--device" in err, (argv[0], err)


# ---- tracebacks: a damaged run store --------------------------------------------------------

DAMAGE = {"truncated": '{"state": "compl', "a list": "[1, 2]", "a string": '"completed"', "wrong types": None}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_training_run_files_fail_clearly(damage, tmp_path, capsys):
    from sarft_core.store import create_run

    for name in ("config.json", "status.json"):
        run = create_run("train", {"model": "", "train": {"role": ROLE}}, path=tmp_path / f"{name}-{damage}")
        run.set_status("completed")
        text = DAMAGE[damage]
        if text is None:
            text = json.dumps({"kind": "train", "model": 5, "train": "oops"}) if name == "config.json" else json.dumps({"state": "cancelled", "updated": "x"})
        (run.path / name).write_text(text)
        code, _, err = cli(capsys, "eval", "--run", run.path, "--suite", "probes", "--limit", "1")
        assert code == 2 and "fix:" in err, (name, err)
        if name == "config.json":  # (a damaged status.json alone is resumable: the config says what to do)
            code, _, err = cli(capsys, "train", "--resume", "--out", run.path)
            assert code == 2 and "fix:" in err, (name, err)


def test_damaged_survey_files_fail_clearly_or_read_as_not_done(tmp_path, capsys):
    from sarft_core.survey import SurveyConfig, open_survey

    survey = open_survey(tmp_path / "sv", SurveyConfig(roles=[ROLE], mode="screen"))
    result = survey.result_path(ROLE)
    result.parent.mkdir(parents=True, exist_ok=True)
    for text in ('{"role": "Baron', "[]", json.dumps({"role": ROLE, "status": "ok", "score": "x", "methods": [1]})):
        result.write_text(text)
        if text.startswith("{\"role\": \"Baron\""):
            continue
        assert cli(capsys, "survey", "--roles", ROLE, "--screen", "--aggregate-only", "--out", survey.path)[0] == 0
    result.write_text('{"role": "Baron')
    assert not survey.is_done(ROLE) and survey.pending() == [ROLE]
    (survey.path / "config.json").write_text('{"kind": "surv')
    code, _, err = cli(capsys, "survey", "--roles", ROLE, "--screen", "--out", survey.path)
    assert code == 2 and "config.json is damaged" in err


def test_a_damaged_job_json_shows_a_failed_job_not_a_crash(tmp_path, monkeypatch):
    from sarft_core import jobs

    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    root = jobs.jobs_root()
    for name, text in (("a-truncated", '{"id": "a", "kind": "eval", "creat'), ("b-list", "[1]"),
                       ("c-types", json.dumps({"kind": "eval", "created": "yesterday", "pid": "12", "argv": "python", "run_dir": 3}))):
        (root / name).mkdir()
        (root / name / "job.json").write_text(text)
    found = jobs.list_jobs()
    assert len(found) == 3
    for job in found:
        assert job.state() == "failed" and not job.is_active
        assert job.problem()
        job.log_tail()
        assert job.run_dir is None
    assert len(jobs.list_jobs("eval")) == 1


def test_dashboard_pages_render_beside_a_damaged_job_json_and_wrongly_typed_runs(tmp_path, monkeypatch, tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    from sarft_core.store import create_run

    ws = tmp_path / "ws"
    run = create_run("train", {"model": 5, "method": [1], "role": {"a": 1}, "train": "x"}, path=ws / "runs" / "t1")
    run.status_path.write_text(json.dumps({"state": "running", "step": "x", "max_steps": "y", "eta_s": "z", "pid": "p", "updated": "u", "error": 3}))
    run.log_path.write_text('{"step": "a", "loss": "b"}\n{"step": 1, "loss": null}\n')
    ev = create_run("eval", {"model": ["m"], "generation": "g", "suites": 3}, path=ws / "runs" / "e1")
    ev.set_status("completed")
    (ev.path / "metrics.json").write_text('{"suites": [1, 2]}')
    create_run("score", {"role": 3, "limit": "many"}, path=ws / "runs" / "s1").status_path.write_text('{"state": "completed", "updated": 5}')
    create_run("survey", {"roles": "abc", "mode": 3}, path=ws / "runs" / "v1")
    (ws / "jobs" / "x-train-0").mkdir(parents=True)
    (ws / "jobs" / "x-train-0" / "job.json").write_text('{"kind": "train", "run_dir": "/nowhere", "crea')
    (ws / "jobs" / "y-eval-0").mkdir(parents=True)
    (ws / "jobs" / "y-eval-0" / "job.json").write_text(json.dumps({"kind": "eval", "created": "soon", "label": 7}))
    monkeypatch.setenv("SARFT_WORKSPACE", str(ws))
    monkeypatch.setenv("SARFT_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    for page in ("overview", "training", "evaluation", "scoring", "survey", "compare"):
        at.switch_page(f"../pages/{page}.py")
        at.run()
        assert not at.exception, (page, at.exception)


# ---- tracebacks: lone surrogates in text ----------------------------------------------------

def test_lone_surrogates_in_data_and_prompt_files_are_refused_clearly(tmp_path, capsys):
    from sarft_core.data import load_profiles, load_samples
    from sarft_core.evaluation.datasets import load_prompt_file

    data = tmp_path / "d.jsonl"
    data.write_text('{"role": "%s", "input": "hi \\ud800 there", "output": "ok"}\n' % ROLE)
    with pytest.raises(SarftError, match="row 1 input holds an invalid character"):
        load_samples(data, role=ROLE)
    prof = tmp_path / "p.json"
    prof.write_text('[{"name": "A", "profile": "bad \\udfff"}]')
    with pytest.raises(SarftError, match="invalid character"):
        load_profiles(prof)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "x \\ud83d y"}\n')
    with pytest.raises(SarftError, match="invalid character"):
        load_prompt_file(prompts)
    code, _, err = cli(capsys, "score", "--role", ROLE, "--data", data, "--out", tmp_path / "s.jsonl")
    assert code == 2 and "invalid character" in err
    code, _, err = cli(capsys, "eval", "--suite", prompts, "--judge", "keyword", "--out", tmp_path / "ev")
    assert code == 2 and "invalid character" in err


# ---- messages that named the wrong problem --------------------------------------------------

def test_messages_name_the_real_problem(tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = cli(capsys, "score", "--role", ROLE, "--profiles", folder, "--out", tmp_path / "s.jsonl")
    assert code == 2 and "is a folder, not a profiles file" in err and "does not exist" not in err
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(f'role,input,output\n{ROLE},"unterminated,ok\n{ROLE},q,a\n')
    code, _, err = cli(capsys, "score", "--role", ROLE, "--data", csv_path, "--out", tmp_path / "s.jsonl")
    assert code == 2 and "non-text" not in err and ("malformed CSV" in err or "fields than the header" in err), err
    code, _, err = cli(capsys, "train", "--role", ROLE, "--lora-dropout", "2", "--out", tmp_path / "r")
    assert code == 2 and "--lora-dropout must be" in err and "lora-targets" not in err


def test_every_command_checks_its_output_before_working(tmp_path, capsys):
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,response\nhow?,I cannot help with that.\n")
    before = rows.read_bytes()
    code, _, err = cli(capsys, "judge", "--in", rows, "--judge", "keyword", "--out", rows)
    assert code == 2 and "is the --in input file" in err and rows.read_bytes() == before
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    for argv in (["judge", "--in", rows, "--judge", "keyword"], ["traits", "--source", "default"], ["report", tmp_path]):
        code, _, err = cli(capsys, *argv, "--out", a_file / "sub" / ("out.html" if argv[0] == "report" else "out.csv"))
        assert code == 2 and "plain.txt is a file, not a folder" in err, (argv[0], err)


# ---- options that were silently ignored, fixes that were refused (issue 31, part C) -------------

@pytest.mark.parametrize("dtype", [None, "float32"])
def test_recheck_band_without_the_fast_mode_is_refused(tmp_path, capsys, dtype):
    """--recheck-band only shapes the fast mode's bf16 screen: on the exact path it changed nothing."""
    argv = ["score", "--role", ROLE, "--limit", "2", "--recheck-band", "0.05", "--model", tmp_path / "never-loaded",
            "--out", tmp_path / "s.jsonl"] + (["--dtype", dtype] if dtype else [])
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "--recheck-band" in err and "--dtype bfloat16" in err and "model" not in err.split("fix:")[0]
    assert not (tmp_path / "s.jsonl").exists()


def test_recheck_band_is_validated_with_the_other_options():
    from sarft_core.scoring import ScoreOptions

    with pytest.raises(SarftError, match="--recheck-band") as err:
        ScoreOptions(recheck_band=0.05).validate()
    assert "--dtype bfloat16" in err.value.fix
    ScoreOptions(fast=True, recheck_band=0.05).validate()


def _suggested_out(err: str) -> str:
    return err.split("e.g. ", 1)[1].split()[0]


def test_output_fixes_name_a_file_the_command_accepts(tmp_path, capsys):
    """The example in an output error's fix is itself accepted by the command that gave it."""
    table = tmp_path / "survey.csv"
    table.write_text("role,malevolence,flagged_fraction\nA,0.1,0.2\nB,0.9,0.6\nC,0.5,0.4\n")
    folder = tmp_path / "reports"
    folder.mkdir()
    code, _, err = cli(capsys, "report", table, "--out", folder)
    assert code == 2 and "is a folder" in err
    suggested = _suggested_out(err)
    assert suggested.endswith(".html"), err
    assert cli(capsys, "report", table, "--out", suggested)[0] == 0
    code, _, err = cli(capsys, "report", table, "--out", table)  # the input itself
    assert code == 2 and _suggested_out(err).endswith(".html"), err
    code, _, err = cli(capsys, "report", table, "--out", tmp_path / "r.csv")
    assert code == 2 and "unsupported output type .csv" in err and ".html" in err
    code, _, err = cli(capsys, "score", "--role", ROLE, "--out", folder)
    assert code == 2 and _suggested_out(err).endswith((".jsonl", ".parquet", ".csv")), err
