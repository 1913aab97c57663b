"""Issue #31 (part B): stale caches, damaged state and late validation, probed on the tiny random
Llama and real files. Each test reproduces one failure the probe found, then checks the fixed
property: a changed setting is a new key (or one clear refusal), a damaged file is one message
naming it and the fix, and nothing is created or lost before an option is refused."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import SHARED_DATA
from sarft_core.cli import main
from sarft_core.runconfig import RunConfig
from sarft_core.store import create_run, read_json, read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _eval(model_dir, *extra, out=None):
    where = ["--out", str(out)] if out is not None else []
    return main(["eval", "--model", str(model_dir), "--data-dir", str(SHARED_DATA), "--suite", "margin", "--limit", "2",
                 "--device", "cpu", *where, *extra])


def _margins(folder):
    return [r["margin"] for r in read_jsonl(folder / "artifacts" / "generations" / "margin.jsonl") if "margin" in r]


# ---------------------------------------------------------------- 1. the evaluation's key
def test_eval_dtype_is_part_of_the_evaluation_key(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    assert _eval(tiny_model_dir, "--dtype", "float32", out=out) == 0
    assert RunConfig.read(out).eval.precision == "float32/cpu"
    fp32 = read_json(out / "metrics.json")["suites"]["margin"]["records"]
    capsys.readouterr()
    # the same folder with another precision: one clear refusal naming what changed, never the fp32 numbers
    assert _eval(tiny_model_dir, "--dtype", "bfloat16", out=out) == 2
    err = capsys.readouterr().err
    assert "precision: 'float32/cpu' -> 'bfloat16/cpu'" in err and "Traceback" not in err
    assert read_json(out / "metrics.json")["suites"]["margin"]["records"] == fp32
    # auto is float32 on the CPU: the same key, so it resumes
    assert _eval(tiny_model_dir, "--dtype", "auto", out=out) == 0


def test_eval_default_folders_differ_by_precision(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    assert _eval(tiny_model_dir, "--dtype", "float32") == 0
    assert _eval(tiny_model_dir, "--dtype", "bfloat16") == 0
    folders = sorted((tmp_path / "ws" / "runs").glob("eval-*"))
    assert len(folders) == 2
    assert {RunConfig.read(f).eval.precision for f in folders} == {"float32/cpu", "bfloat16/cpu"}
    bf16 = next(f for f in folders if RunConfig.read(f).eval.precision == "bfloat16/cpu")
    # the bf16 folder's answers are bf16's own: equal to a fresh bf16 evaluation elsewhere
    assert _eval(tiny_model_dir, "--dtype", "bfloat16", out=tmp_path / "fresh") == 0
    assert _margins(bf16) == _margins(tmp_path / "fresh")


def test_an_answer_cached_without_the_precision_is_recomputed(tiny_model_dir, tmp_path):
    """A folder made before the precision was recorded: resumed, but its answers are not reused."""
    out = tmp_path / "ev"
    assert _eval(tiny_model_dir, out=out) == 0
    config = read_json(out / "config.json")
    config.pop("precision")
    (out / "config.json").write_text(json.dumps(config))
    cache = out / "artifacts" / "generations" / "margin.jsonl"
    rows = read_jsonl(cache)
    cache.write_text("".join(json.dumps(dict(r, key="old-" + r["key"], margin=99.0)) + "\n" for r in rows))
    assert _eval(tiny_model_dir, out=out) == 0
    values = [r["value"] for r in read_json(out / "metrics.json")["suites"]["margin"]["records"] if r["metric"] == "margin"]
    assert values and all(abs(v) < 50 for v in values)


# ---------------------------------------------------------------- 2. damaged evaluation state
def test_truncated_metrics_json_is_named_before_any_work(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    assert _eval(tiny_model_dir, out=out) == 0
    text = (out / "metrics.json").read_text()
    (out / "metrics.json").write_text(text[: len(text) // 2])
    capsys.readouterr()
    assert _eval(tiny_model_dir, out=out) == 2
    err = capsys.readouterr().err
    assert "metrics.json is not valid JSON" in err and "fix: delete" in err and "Traceback" not in err
    assert read_json(out / "status.json")["state"] == "completed"  # refused before the run was touched
    (out / "metrics.json").unlink()  # the fix it names
    assert _eval(tiny_model_dir, out=out) == 0
    assert read_json(out / "metrics.json")["suites"]["margin"]["records"]


def test_truncated_suite_table_is_named_with_its_fix(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ("--suite", "probes", "--judge", "keyword", "--max-new-tokens", "2", "--limit", "1")
    assert _eval(tiny_model_dir, *args, out=out) == 0
    table = out / "artifacts" / "probes.parquet"
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert _eval(tiny_model_dir, *args, out=out) == 2
    err = capsys.readouterr().err
    assert f"{table} is damaged" in err and "fix: delete" in err and "Traceback" not in err
    assert table.read_bytes() == data[: len(data) // 2]  # left as it was
    table.unlink()
    assert _eval(tiny_model_dir, *args, out=out) == 0


def test_damaged_cached_answers_are_recomputed_not_served(tiny_model_dir, tmp_path):
    out = tmp_path / "ev"
    assert _eval(tiny_model_dir, out=out) == 0
    want = _margins(out)
    cache = out / "artifacts" / "generations" / "margin.jsonl"
    rows = read_jsonl(cache)
    broken = [{k: v for k, v in rows[0].items() if k != "margin"}, dict(rows[1], margin=float("nan"))]
    cache.write_text("".join(json.dumps(r) + "\n" for r in broken))
    assert _eval(tiny_model_dir, out=out) == 0
    assert _margins(out)[-2:] == pytest.approx(want)


def _training_run(tiny_model_dir, path, state):
    from sarft_core.training.run import TrainConfig, run_config

    # the run's config first, as training writes it (create_run refuses a folder holding files of no run)
    run = create_run("train", run_config(TrainConfig(model=str(tiny_model_dir), method="sft", role="Baron Vex Morrow")), path=path)
    shutil.copytree(tiny_model_dir, path / "artifacts" / "model")
    run.set_status(state)
    return run


def test_eval_of_a_run_still_training_creates_nothing(tiny_model_dir, tmp_path, capsys):
    run = _training_run(tiny_model_dir, tmp_path / "train-run", "running")
    argv = ["eval", "--run", str(run.path), "--suite", "margin", "--limit", "1", "--data-dir", str(SHARED_DATA)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not complete (state: running)" in err and "then rerun this command" in err
    assert not (run.path / "eval").exists()
    run.set_status("completed")  # training finished: the same command now works
    assert main(argv) == 0


# ---------------------------------------------------------------- 3. training resume
ROLE = "Baron Vex Morrow"


def _quiet(*_a, **_k):
    pass


class _StopAfter:
    """A stop request that turns true once the run has logged ``n`` steps."""

    def __init__(self, out, n):
        self.out, self.n = out, n

    def __bool__(self):
        return len(read_jsonl(self.out / "logs.jsonl")) >= self.n


def _config(model_dir, **over):
    from sarft_core.training.run import TrainConfig

    base = dict(method="sft", role=ROLE, model=str(model_dir), dtype="float32", device="cpu", limit=8, batch_size=2,
                grad_accum=1, max_steps=4, lora_r=4, lora_alpha=8, save_steps=1, lr=1e-2)
    base.update(over)
    return TrainConfig(**base)


def _adapter(out):
    from safetensors.torch import load_file

    return load_file(str(out / "artifacts" / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def straight_run(tiny_model_dir, tmp_path_factory):
    from sarft_core.training import train

    out = tmp_path_factory.mktemp("straight") / "run"
    assert train(_config(tiny_model_dir), out, log=_quiet)["state"] == "completed"
    return out


def _stopped_run(tiny_model_dir, out, cfg=None, steps=3):
    from sarft_core.training import train

    status = train(cfg or _config(tiny_model_dir), out, stop=_StopAfter(out, steps), log=_quiet)
    assert status["state"] == "cancelled" and status["last_checkpoint_step"] == steps
    return out / "checkpoints"


def _same_weights(a, b, atol=1e-4):
    import numpy as np

    return a.keys() == b.keys() and all(np.allclose(a[k].numpy(), b[k].numpy(), atol=atol) for k in a)


@pytest.mark.parametrize("lost", ["optimizer.pt", "adapter_model.safetensors"])
def test_a_partial_checkpoint_is_passed_over_with_a_warning(tiny_model_dir, tmp_path, straight_run, lost):
    from sarft_core.training import train

    out = tmp_path / "run"
    ckpts = _stopped_run(tiny_model_dir, out)
    (ckpts / "checkpoint-3" / lost).unlink()
    said = []
    final = train(_config(tiny_model_dir), out, resume=True, log=said.append)
    assert final["state"] == "completed" and final["step"] == 4
    assert any("checkpoint-3 is incomplete" in m and lost in m for m in said)
    assert any("resuming" in m and "checkpoint-2" in m for m in said)
    assert _same_weights(_adapter(out), _adapter(straight_run))  # whole optimizer state: the uninterrupted weights


def test_no_whole_checkpoint_restarts_from_the_first_step_and_says_so(tiny_model_dir, tmp_path, straight_run):
    from sarft_core.training import train

    out = tmp_path / "run"
    ckpts = _stopped_run(tiny_model_dir, out)
    for ck in ckpts.glob("checkpoint-*"):
        (ck / "optimizer.pt").unlink()
    said = []
    final = train(_config(tiny_model_dir), out, resume=True, log=said.append)
    assert final["state"] == "completed" and [r["step"] for r in read_jsonl(out / "logs.jsonl")] == [1, 2, 3, 4]
    assert any("restarts from the first step" in m for m in said)
    assert _same_weights(_adapter(out), _adapter(straight_run))


def test_resume_refuses_changed_input_files(tiny_model_dir, tmp_path, demo_samples):
    from sarft_core.errors import SarftError
    from sarft_core.training import train

    data = tmp_path / "samples.jsonl"
    rows = [s.to_dict() for s in demo_samples if s.role == ROLE][:8]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    _stopped_run(tiny_model_dir, out, _config(tiny_model_dir, data=str(data)), steps=2)
    assert set(read_json(out / "config.json")["inputs"]) == {"data", "profiles"}
    data.write_text("".join(json.dumps(dict(r, output=r["output"] + " (edited)")) + "\n" for r in rows))
    before = (out / "status.json").read_text()
    with pytest.raises(SarftError, match=r"cannot be resumed: the data file .*samples.jsonl changed since the run began"):
        train(_config(tiny_model_dir), out, resume=True, log=_quiet)
    assert (out / "status.json").read_text() == before  # refused before the run was touched
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))  # the original content: resumes
    assert train(_config(tiny_model_dir), out, resume=True, log=_quiet)["state"] == "completed"


def test_bad_training_options_are_refused_before_the_run_folder_exists(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"

    def cli(*extra):
        return main(["train", "--role", ROLE, "--model", str(tiny_model_dir), "--out", str(out), "--limit", "2",
                     "--max-steps", "1", "--batch-size", "2", "--grad-accum", "1", "--device", "cpu", *extra])

    for extra, message in ((("--method", "sppft", "--freeze-layers", "6-2"), "bad --freeze-layers '6-2'"),
                           (("--method", "sppft", "--freeze-layers", "0-99"), "is not a range inside 0-"),
                           (("--method", "sft", "--freeze-layers", "1"), "--freeze-layers is used by sppft only"),
                           (("--method", "sft", "--overrides", str(tmp_path / "missing.json")), "--overrides is used by sarft"),
                           (("--method", "sarft", "--overrides", str(tmp_path / "missing.json")), "overrides file does not exist")):
        assert cli(*extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
        assert not out.exists(), extra
    assert cli("--method", "sppft", "--freeze-layers", "1") == 0  # the corrected command is not blocked


# ---------------------------------------------------------------- 4. survey
def _survey_files(tmp_path, demo_samples):
    from sarft_core.data import DEMO_PROFILES

    data, profiles = tmp_path / "samples.jsonl", tmp_path / "profiles.json"
    rows = [s.to_dict() for s in demo_samples if s.role == ROLE][:4]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    profiles.write_text(DEMO_PROFILES.read_text(encoding="utf-8"), encoding="utf-8")
    return data, profiles, rows


def _content_score(calls):
    """A score step whose number is a function of the role's content (its profile and rows)."""
    def score(ctx):
        calls.append(ctx.role)
        marked = sum("EVIL" in s.output for s in ctx.samples) + ("EVIL" in ctx.profile.role_prompt)
        return {"samples": len(ctx.samples), "flagged": marked, "flagged_fraction": marked / len(ctx.samples), "mean_margin": 0.0}
    return score


def test_a_resumed_survey_redoes_a_role_whose_content_changed(tmp_path, demo_samples):
    from sarft_core.survey import SCREEN, Steps, SurveyConfig, open_survey, run_pending

    data, profiles, rows = _survey_files(tmp_path, demo_samples)
    cfg = SurveyConfig(roles=[ROLE], mode=SCREEN, data=[str(data)], profiles=str(profiles))
    calls: list = []

    def fraction(folder):
        survey = open_survey(folder, cfg)
        run_pending(survey, Steps(score=_content_score(calls)), show_progress=False)
        return survey.result(ROLE)["score"]["flagged_fraction"]

    assert fraction(tmp_path / "s") == 0.0 and calls == [ROLE]
    assert fraction(tmp_path / "s") == 0.0 and calls == [ROLE]  # unchanged content: reused
    data.write_text("".join(json.dumps(dict(r, output=r["output"] + " EVIL") if i < 2 else r) + "\n" for i, r in enumerate(rows)))
    assert fraction(tmp_path / "s") == fraction(tmp_path / "fresh") == 0.5  # same paths, new rows: redone
    text = json.loads(profiles.read_text())
    entry = next(p for p in (text if isinstance(text, list) else text.values()) if isinstance(p, dict) and p.get("name") == ROLE)
    entry["profile"] = entry["profile"] + " EVIL"
    profiles.write_text(json.dumps(text))
    assert fraction(tmp_path / "s") == fraction(tmp_path / "fresh2") == 0.75  # new profile text: redone


def test_a_trained_run_of_other_content_is_set_aside_not_reused(tmp_path, demo_samples):
    from sarft_core.store import atomic_write_json, inputs_fingerprint
    from sarft_core.survey import FULL, RoleContext, SurveyConfig, open_survey
    from sarft_core.survey.steps import _set_aside_if_stale

    data, profiles, rows = _survey_files(tmp_path, demo_samples)
    survey = open_survey(tmp_path / "s", SurveyConfig(roles=[ROLE], mode=FULL, data=[str(data)], profiles=str(profiles)))
    profile, samples = survey.role_inputs(ROLE)
    ctx = RoleContext(survey, ROLE, profile, samples, survey.role_dir(ROLE), None, False)
    ctx.samples_file.write_text(data.read_text())
    run = ctx.work_dir / "train-sft"
    atomic_write_json(run / "config.json", {"kind": "train", "inputs": inputs_fingerprint({"data": data, "profiles": profiles})})
    _set_aside_if_stale(run, ctx)
    assert run.is_dir()  # same content: kept for reuse
    ctx.samples_file.write_text(data.read_text().replace("}", ', "note": 1}', 1))
    _set_aside_if_stale(run, ctx)
    assert not run.exists() and len(list(ctx.work_dir.glob("train-sft.stale-*"))) == 1


def test_methods_are_checked_before_any_work(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["survey", "--roles", ROLE, "--methods", "sft,bogus", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown training method(s) in --methods: 'bogus'" in err and "Traceback" not in err
    assert not out.exists()


def test_a_role_finished_by_another_process_counts_as_finished(tmp_path, demo_samples):
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT
    from sarft_core.survey import SCREEN, Steps, SurveyConfig, open_survey, run_pending

    data, profiles, _ = _survey_files(tmp_path, demo_samples)
    roles = [ROLE, "Sister Alma Reyes"]
    from sarft_core.data import DEMO_SAMPLES, load_samples

    rows = [s.to_dict() for s in load_samples(DEMO_SAMPLES, role=roles[1], limit=2)]
    with open(data, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    survey = open_survey(tmp_path / "s", SurveyConfig(roles=roles, mode=SCREEN, data=[str(data)], profiles=str(profiles)))
    result = {"role": roles[1], "status": "ok", "errors": [], "seconds": 1.0, "key": survey.role_key(roles[1])}
    ready = tmp_path / "ready"
    # the other process: holds the role's lock, finishes the role a moment later
    other = subprocess.Popen([sys.executable, "-c", (
        "import json, sys, time, pathlib\n"
        "from sarft_core.store import atomic_write_json, file_lock\n"
        "lock = file_lock(sys.argv[1], wait=False)\n"
        "pathlib.Path(sys.argv[4]).write_text('')\n"
        "time.sleep(1.5)\n"
        "atomic_write_json(sys.argv[2], json.loads(sys.argv[3]))\n"
        "lock.release()\n"), str(survey.lock_path(roles[1])), str(survey.result_path(roles[1])), json.dumps(result), str(ready)],
        cwd=str(ROOT))
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    calls: list = []
    run_pending(survey, Steps(score=_content_score(calls)), show_progress=False)
    assert other.wait(60) == 0
    assert calls == [ROLE] and survey.pending() == []  # ours done, theirs waited for and counted
