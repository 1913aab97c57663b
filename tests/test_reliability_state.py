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

    shutil.copytree(tiny_model_dir, path / "artifacts" / "model")
    run = create_run("train", run_config(TrainConfig(model=str(tiny_model_dir), method="sft", role="Baron Vex Morrow")), path=path)
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
