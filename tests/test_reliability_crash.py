"""Crash safety: SIGKILL a job at a (seeded) random moment, resume it, and check that nothing was lost.

For each job kind: no completed result is lost or corrupted (every finished record survives and
is reused), nothing partial is shown as complete (no output file, no "completed" status), and the
resumed result equals an uninterrupted run. Subprocesses are real ``python -m sarft_core``
commands on the tiny random model.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sarft_core.data import DEMO_SAMPLES
from sarft_core.store import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
ROLE = "Baron Vex Morrow"
N_SAMPLES = 150  # three chunks of 64 (the cache's unit of completed work)


def env_for(home: Path, workspace: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SARFT_HOME=str(home))
    if workspace is not None:
        env["SARFT_WORKSPACE"] = str(workspace)
    return env


@pytest.fixture(scope="module")
def big_role(tmp_path_factory) -> Path:
    """A larger demo role: every demo sample, re-voiced for one character, with short answers (fast)."""
    rows = [json.loads(line) for line in DEMO_SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for k in range(2):
        for i, r in enumerate(rows):
            answer = " ".join(r["output"].split()[: 6 + (i % 7)])
            out.append({"id": f"s{k}-{i:03d}", "role": ROLE, "input": f"{r['input']} ({k})", "output": answer})
    path = tmp_path_factory.mktemp("crashdata") / "big.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in out[:N_SAMPLES]) + "\n", encoding="utf-8")
    return path


def score_argv(data: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sarft_core", "score", "--role", ROLE, "--data", str(data), "--model", str(model),
            "--out", str(out), "--with-tokens"]


def cache_records(home: Path) -> list[dict]:
    return [r for p in sorted((home / "scores").glob("*/records*.jsonl")) for r in read_jsonl(p)]


def kill_at_random_moment(proc: subprocess.Popen, home: Path, rng: random.Random, kill) -> int:
    """Wait until the job has done a seeded random amount of work, then SIGKILL it; records then."""
    target = rng.choice([0, 1, 64, 65])  # records finished before the kill (0: during start-up); the last chunk is never done
    extra = rng.uniform(0.0, 0.15)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(cache_records(home)) < target:
        time.sleep(0.05)
    time.sleep(extra)
    kill()
    proc.wait(timeout=30)
    return len(cache_records(home))


def assert_same_scores(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.id) == list(want.id) and list(got.columns) == list(want.columns)
    for col in ("logp_ref", "logp_role", "logp_unsafe", "s_role", "s_unsafe"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=0, atol=1e-4)
    margin = (want.s_unsafe - want.s_role).abs() > 1e-3  # batch shapes may move a margin of ~0 across the line
    assert (got.harmful[margin] == want.harmful[margin]).all()
    assert list(got.n_tokens) == list(want.n_tokens)


@pytest.fixture(scope="module")
def reference_scores(tmp_path_factory, big_role, tiny_model_dir) -> pd.DataFrame:
    """The uninterrupted run, its own score cache."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "scores.parquet"
    res = subprocess.run(score_argv(big_role, tiny_model_dir, out), env=env_for(tmp / "home"), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return pd.read_parquet(out)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 23])
def test_sigkilled_score_resumes_to_the_uninterrupted_result(tmp_path, big_role, tiny_model_dir, reference_scores, seed):
    home, out = tmp_path / "home", tmp_path / "scores.parquet"
    proc = subprocess.Popen(score_argv(big_role, tiny_model_dir, out), env=env_for(home), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = kill_at_random_moment(proc, home, random.Random(seed), lambda: proc.send_signal(signal.SIGKILL))
    if out.exists():  # the kill landed after the output was written: then it is whole
        assert_same_scores(pd.read_parquet(out), reference_scores)
    else:  # nothing partial is shown: no output file at all (hidden temporaries at most)
        assert not out.with_name("scores.tokens.jsonl").exists()
    survivors = cache_records(home)
    assert len(survivors) == before and all(len(r["role"]) == len(r["answer_ids"]) for r in survivors)
    res = subprocess.run(score_argv(big_role, tiny_model_dir, out), env=env_for(home), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"from cache {min(before, N_SAMPLES)}" in res.stdout  # every finished record was kept and reused
    assert_same_scores(pd.read_parquet(out), reference_scores)
    assert len(read_jsonl(out.with_name("scores.tokens.jsonl"))) == N_SAMPLES
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_sigkilled_background_score_job_is_failed_not_complete_and_reruns(tmp_path, monkeypatch, big_role, tiny_model_dir, reference_scores):
    """The dashboard's path: a job whose whole process group is SIGKILLed, then started again."""
    from sarft_core import audit, jobs
    from sarft_core.data import load_profiles
    from sarft_core.data import DEMO_PROFILES

    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("SARFT_HOME", str(tmp_path / "home"))
    profile = load_profiles(DEMO_PROFILES)[ROLE]
    run = audit.create_score_run(profile, big_role, model_spec=str(tiny_model_dir))
    job = jobs.start(audit.score_args(run), kind="score", run_dir=run.path)
    pgid = job.meta()["pgid"]
    kill_at_random_moment(jobs._CHILDREN[job.meta()["pid"]], tmp_path / "home", random.Random(5),
                          lambda: os.killpg(pgid, signal.SIGKILL))
    state = jobs.wait(job, 10)
    if state == "failed":  # killed mid-run (the usual case): nothing is shown as done
        assert "killed" in job.problem()
        assert not run.is_complete and not (run.path / audit.SCORES_FILE).exists()
        assert audit.score_runs([run]) == []  # the dashboard lists no scores for it
    else:  # the kill landed after the supervisor recorded the end
        assert state == "completed" and run.is_complete
    again = jobs.start(audit.score_args(run), kind="score", run_dir=run.path)
    assert jobs.wait(again, 240) == "completed", again.log_tail()
    assert run.is_complete
    assert_same_scores(audit.load_scores(run), reference_scores.assign(id=reference_scores.id.astype(str)))


# --- evaluation ---------------------------------------------------------------------------------

def eval_argv(model: Path, out: Path) -> list[str]:
    # batch size 1: every prompt is decoded alone in both runs, so greedy outputs are bit-identical
    return [sys.executable, "-m", "sarft_core", "eval", "--model", str(model), "--suite", "probes", "--limit", "20",
            "--max-new-tokens", "12", "--batch-size", "1", "--judge", "keyword,gcg", "--out", str(out)]


def eval_table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "artifacts" / "probes.parquet")


@pytest.mark.slow
def test_sigkilled_evaluation_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir):
    ref_out, out = tmp_path / "ref", tmp_path / "eval"
    res = subprocess.run(eval_argv(tiny_model_dir, ref_out), env=env_for(tmp_path / "h1"), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    generations = out / "artifacts" / "generations" / "probes.jsonl"
    proc = subprocess.Popen(eval_argv(tiny_model_dir, out), env=env_for(tmp_path / "h2"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(7)
    target, extra = rng.randint(1, 20), rng.uniform(0, 0.05)  # of 40 prompts
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(read_jsonl(generations)) < target:
        time.sleep(0.02)
    time.sleep(extra)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    kept = read_jsonl(generations)
    status = json.loads((out / "status.json").read_text())
    if status["state"] == "completed":  # only if the kill landed after the end: then everything is there
        assert len(kept) == 40 and (out / "metrics.json").is_file()
    else:
        assert len(kept) < 40 or not (out / "artifacts" / "probes.parquet").exists()
    res = subprocess.run(eval_argv(tiny_model_dir, out), env=env_for(tmp_path / "h2"), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    after = {r["key"]: r for r in read_jsonl(generations)}
    assert all(after[r["key"]]["response"] == r["response"] for r in kept)  # finished generations kept, not redone
    got, want = eval_table(out), eval_table(ref_out)
    cols = ["id", "prompt", "response", "verdict_keyword", "verdict_gcg"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    metrics = lambda p: [{k: v for k, v in r.items() if k != "updated"} for r in json.loads((p / "metrics.json").read_text())["suites"]["probes"]["records"]]  # noqa: E731
    assert metrics(out) == metrics(ref_out)


# --- training -----------------------------------------------------------------------------------

def train_argv(model: Path, out: Path, resume: bool = False) -> list[str]:
    head = [sys.executable, "-m", "sarft_core", "train"]
    if resume:
        return head + ["--resume", "--out", str(out)]
    return head + ["--method", "sarft", "--role", ROLE, "--model", str(model), "--limit", "16", "--batch-size", "2",
                   "--grad-accum", "1", "--max-steps", "8", "--save-steps", "2", "--lr", "1e-3", "--out", str(out)]


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir):
    pytest.importorskip("sarft_core.training", reason="training is not merged into this branch yet")
    from safetensors.torch import load_file

    ref, out = tmp_path / "straight", tmp_path / "run"
    res = subprocess.run(train_argv(tiny_model_dir, ref), env=env_for(tmp_path / "h1"), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    proc = subprocess.Popen(train_argv(tiny_model_dir, out), env=env_for(tmp_path / "h2"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(3)
    target_step, extra = rng.choice([1, 2, 3, 5]), rng.uniform(0, 0.4)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(read_jsonl(out / "logs.jsonl")) < target_step:
        time.sleep(0.02)
    time.sleep(extra)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    finished = json.loads((out / "status.json").read_text())["state"] == "completed"
    if not finished:  # the usual case: killed mid-run, and not shown as complete
        assert not (out / "artifacts" / "adapter").exists()
    res = subprocess.run(train_argv(tiny_model_dir, out, resume=True), env=env_for(tmp_path / "h2"),
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == (2 if finished else 0), res.stderr[-3000:]  # a finished run says so and is left alone
    got, want = (json.loads((p / "status.json").read_text()) for p in (out, ref))
    assert got["state"] == want["state"] == "completed" and got["step"] == want["step"] == 8
    steps = [r["step"] for r in read_jsonl(out / "logs.jsonl") if "step" in r and "loss" in r]
    assert steps == list(range(1, 9))  # every step logged once: redone steps replaced, none lost
    losses = {r["step"]: r["loss"] for r in read_jsonl(out / "logs.jsonl") if "loss" in r}
    ref_losses = {r["step"]: r["loss"] for r in read_jsonl(ref / "logs.jsonl") if "loss" in r}
    assert losses == pytest.approx(ref_losses, rel=1e-3, abs=1e-4)
    a, b = (load_file(str(p / "artifacts" / "adapter" / "adapter_model.safetensors")) for p in (out, ref))
    assert a.keys() == b.keys() and all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-4) for k in a)


def test_a_checkpoint_torn_by_a_crash_is_not_resumed_from(tmp_path):
    training = pytest.importorskip("sarft_core.training.trainer", reason="training is not merged into this branch yet")
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_step": 4, "log_hi')):
        ck = tmp_path / f"checkpoint-{step}"
        ck.mkdir()
        (ck / "trainer_state.json").write_text(state)
    training.write_manifest(tmp_path / "checkpoint-2")  # whole; checkpoint-4 was killed before its manifest
    (tmp_path / "checkpoint-6").mkdir()  # killed before its trainer state was written
    assert training.last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_seed_fixes_the_lora_initialisation(tiny_model_dir):
    pytest.importorskip("sarft_core.training", reason="training is not merged into this branch yet")
    from sarft_core.models import load_model
    from sarft_core.training import TrainConfig
    from sarft_core.training.run import _build_model

    def lora_a(seed):
        lm = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
        model, _ = _build_model(TrainConfig(method="sft", seed=seed), lm, {}, log=lambda m: None)
        return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_A" in k}

    a, b, c = lora_a(0), lora_a(0), lora_a(1)
    assert a and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # was different on every run
    assert not all(np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)


SURVEY_ROLES = ["Baron Vex Morrow", "Sister Alma Reyes", "Captain Nell Corran"]


def survey_argv(model: Path, traits: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sarft_core", "survey", "--screen", "--roles", ",".join(SURVEY_ROLES), "--model", str(model),
            "--limit", "6", "--exact", "--traits", "csv", "--traits-csv", str(traits), "--out", str(out)]


@pytest.mark.slow
def test_sigkilled_survey_resumes_without_redoing_finished_roles(tmp_path, tiny_model_dir):
    traits = tmp_path / "traits.csv"
    traits.write_text("role,malevolence,aggression,deceptiveness,benevolence\n"
                      "Baron Vex Morrow,0.9,0.8,0.8,0.1\nSister Alma Reyes,0.1,0.1,0.1,0.9\nCaptain Nell Corran,0.4,0.5,0.4,0.6\n")
    env = env_for(tmp_path / "home", tmp_path / "ws")
    reference = tmp_path / "reference"
    subprocess.run(survey_argv(tiny_model_dir, traits, reference), env=env, cwd=ROOT, check=True, capture_output=True, timeout=600)
    want = pd.read_csv(reference / "table.csv")

    out = tmp_path / "killed"
    rng = random.Random(7)
    proc = subprocess.Popen(survey_argv(tiny_model_dir, traits, out), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "roles").glob("*.json")) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.5))
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    finished = {p.name: p.read_text() for p in (out / "roles").glob("*.json")}
    assert finished, "the kill came before any role finished"
    for text in finished.values():
        record = json.loads(text)  # a finished role's record is whole, never torn
        assert record["role"] in SURVEY_ROLES and record.get("score", {}).get("samples") == 6

    subprocess.run(survey_argv(tiny_model_dir, traits, out), env=env, cwd=ROOT, check=True, capture_output=True, timeout=600)
    for name, text in finished.items():
        assert (out / "roles" / name).read_text() == text  # finished roles were not redone
    got = pd.read_csv(out / "table.csv")
    cols = ["role", "samples", "flagged_fraction", "mean_margin", "status"]
    pd.testing.assert_frame_equal(got[cols], want[cols], check_exact=False, atol=1e-9)
