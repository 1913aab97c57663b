"""A real `python -m sarft_core train` process: SIGTERM to its group, SIGKILL, resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarft_core.errors import SarftError
from sarft_core.store import RunDir
from sarft_core.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
# enough steps that neither run can finish between two polls (the tiny model trains at ~80 steps/s)
STEPS = 200


def launch(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "sarft_core", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(predicate, proc, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_sigterm_checkpoints_and_cancels_sigkill_never_completes_and_resumes(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run = RunDir(out)
    proc = launch(["--method", "sft", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--dtype", "float32",
                   "--device", "cpu", "--limit", "8", "--batch-size", "2", "--grad-accum", "1", "--max-steps", str(STEPS),
                   "--save-steps", "2", "--lora-r", "4", "--out", str(out)])
    wait_for(lambda: run.status().get("last_checkpoint_step", 0) >= 2, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # what a job runner does to stop a job
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    status = run.status()
    assert status["state"] == "cancelled"
    stopped_at = status["last_checkpoint_step"]
    assert (out / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()
    assert [r["step"] for r in run.logs()] == list(range(1, stopped_at + 1))
    assert "--resume" in err

    proc = launch(["--resume", "--out", str(out)])
    wait_for(lambda: run.status().get("state") == "running" and run.status().get("last_checkpoint_step", 0) >= stopped_at + 2, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=60)
    assert run.status()["state"] == "running"  # never shown as complete
    from sarft_core.models import load_model

    with pytest.raises(SarftError, match="not complete"):
        load_model(str(out))

    final = train(TrainConfig(), out, resume=True, log=lambda *_: None)
    assert final["state"] == "completed" and final["step"] == STEPS
    assert [r["step"] for r in run.logs()] == list(range(1, STEPS + 1))
    assert (out / "artifacts" / "adapter" / "adapter_model.safetensors").is_file()
