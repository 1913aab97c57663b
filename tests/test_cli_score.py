"""`python -m sarft_core score`: output contract and one clear error per user mistake."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sarft_core.scoring import SCORE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "sarft_core", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_score_writes_contract_columns_and_summary(tmp_path, tiny_model_dir):
    out = tmp_path / "scores.parquet"
    home = {"SARFT_HOME": str(tmp_path / "home")}
    os.makedirs(tmp_path / "home" / "models", exist_ok=True)
    res = cli("score", "--role", "baron vex morrow", "--model", str(tiny_model_dir), "--limit", "5", "--out", str(out), "--with-tokens", env_extra=home)
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(out)
    assert list(df.columns) == SCORE_COLUMNS and len(df) == 5
    assert "5 samples" in res.stdout and "flagged" in res.stdout and "samples/s" in res.stdout
    tokens = [json.loads(line) for line in open(tmp_path / "scores.tokens.jsonl")]
    assert len(tokens) == 5 and len(tokens[0]["tokens"]) == len(tokens[0]["ratio"]) == df.n_tokens[0]
    again = cli("score", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--limit", "5", "--out", str(tmp_path / "s.jsonl"), env_extra=home)
    assert "all from cache" in again.stdout
    assert list(pd.read_json(tmp_path / "s.jsonl", lines=True).columns) == SCORE_COLUMNS


@pytest.mark.parametrize(
    "args, message",
    [
        (["--role", "Baron Vex"], "did you mean 'Baron Vex Morrow'"),
        (["--role", "Baron Vex Morrow", "--data", "/no/such/file.jsonl"], "data file does not exist"),
        (["--role", "Baron Vex Morrow", "--model", "/no/such/model"], "model path does not exist"),
        (["--role", "Baron Vex Morrow", "--profiles", "/no/profiles.json"], "profiles file does not exist"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(tmp_path, args, message):
    res = cli("score", *args, "--out", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr and "fix:" in res.stderr


def test_malformed_line_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"role": "Baron Vex Morrow", "input": "a", "output": "b"}\nnot json\n', encoding="utf-8")
    res = cli("score", "--role", "Baron Vex Morrow", "--data", str(bad), "--out", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2 and "line 2" in res.stderr and "Traceback" not in res.stderr


def test_empty_data_and_bad_output_type(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    res = cli("score", "--role", "Baron Vex Morrow", "--data", str(empty), "--out", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2 and "holds no samples" in res.stderr
    res = cli("score", "--role", "Baron Vex Morrow", "--out", str(tmp_path / "o.xlsx"))
    assert res.returncode == 2 and "unsupported output type" in res.stderr


def test_truncated_samples_are_counted(tmp_path, tiny_model_dir):
    data = tmp_path / "long.jsonl"
    rows = [{"role": "Baron Vex Morrow", "input": "Speak.", "output": "Kneel! " * 200}, {"role": "Baron Vex Morrow", "input": "q " * 700, "output": "No."}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    res = cli("score", "--role", "Baron Vex Morrow", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o.csv"), "--no-cache")
    assert res.returncode == 0, res.stderr
    assert "prompts truncated 1" in res.stdout and "answers truncated 1" in res.stdout
    assert pd.read_csv(tmp_path / "o.csv").n_tokens.max() == 128


def test_scoring_splits_samples_over_processes(tmp_path, tiny_model_dir):
    """Two processes under torchrun (what `accelerate launch` runs) each score half; rank 0 writes
    the whole table, equal to a one-process run."""
    torchrun = Path(sys.executable).with_name("torchrun")
    args = ["score", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--limit", "12"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), SARFT_HOME=str(tmp_path / "multi"), OMP_NUM_THREADS="1")
    multi = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "sarft_core", *args, "--out", str(tmp_path / "multi.jsonl")],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert multi.stdout.count("12 samples") == 1  # one summary, from rank 0
    shards = sorted((tmp_path / "multi" / "scores").glob("*/records.rank*.jsonl"))
    keys = [[json.loads(line)["key"] for line in open(p)] for p in shards]
    assert [len(k) for k in keys] == [6, 6] and not set(keys[0]) & set(keys[1])
    single = cli(*args, "--out", str(tmp_path / "single.jsonl"), env_extra={"SARFT_HOME": str(tmp_path / "single")})
    assert single.returncode == 0, single.stderr
    a = pd.read_json(tmp_path / "multi.jsonl", lines=True)
    b = pd.read_json(tmp_path / "single.jsonl", lines=True)
    assert list(a.id) == list(b.id) and (a.harmful == b.harmful).all()
    assert (a.logp_role - b.logp_role).abs().max() < 1e-5
