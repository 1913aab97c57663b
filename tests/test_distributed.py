"""The distributed paths, exercised for real on the CPU: training under torchrun (DDP over gloo
through accelerate's state) against one process with the same effective batch, the survey's
workers against one worker, and the GPU launch configs through accelerate's own validation
(no GPU needed: what a GPU user would otherwise discover at launch)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _launch_args(config: Path):
    """accelerate's own parsing and validation of `accelerate launch --config_file CONFIG ...`."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(config), "-m", "sarft_core", "train", "--role", "R", "--out", "RUN"])
    return _validate_launch_command(args)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_accelerate_accepts_every_launch_config(name):
    args, defaults, _ = _launch_args(CONFIGS / name)
    assert defaults.num_machines == 1 and args.num_processes >= 1


def test_deepspeed_zero2_config_dry_run(monkeypatch):
    """The launcher's environment, then accelerate's DeepSpeed plugin built from it (which reads
    and checks the JSON); every "auto" in the JSON is one the Trainer fills from our options."""
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    monkeypatch.chdir(ROOT)  # the YAML names the JSON relative to the project root, as documented
    args, defaults, _ = _launch_args(CONFIGS / "deepspeed_zero2.yaml")
    assert args.use_deepspeed and args.num_processes == 8
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and Path(env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).is_file()
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == 2 and not plugin.zero3_init_flag
    config = json.loads(Path(env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).read_text())
    autos = {k for k, v in config.items() if v == "auto"} | {f"{k}.{kk}" for k, v in config.items() if isinstance(v, dict) for kk, vv in v.items() if vv == "auto"}
    filled_by_trainer = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
                         "bf16.enabled", "fp16.enabled"}
    assert autos <= filled_by_trainer, autos - filled_by_trainer


def test_fsdp_config_dry_run():
    """The launcher's environment, then accelerate's FSDP plugin built from it (which checks the
    sharding strategy, wrap policy, prefetch and state-dict type). Only the two options that
    probe a GPU at construction (sync_module_states, cpu_ram_efficient_loading) are turned off
    for the check; their values are asserted as read."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = _launch_args(CONFIGS / "fsdp.yaml")
    assert args.use_fsdp and args.mixed_precision == "bf16"
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["FSDP_SYNC_MODULE_STATES"] == "true" and env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    fsdp_env = {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    fsdp_env.update(FSDP_SYNC_MODULE_STATES="false", FSDP_CPU_RAM_EFFICIENT_LOADING="false")
    with mock.patch.dict(os.environ, fsdp_env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 1 and plugin.use_orig_params
    assert plugin.sharding_strategy.name == "FULL_SHARD" and plugin.backward_prefetch.name == "BACKWARD_PRE"
    assert plugin.state_dict_type.name == "FULL_STATE_DICT" and plugin.auto_wrap_policy is not None


def _env(home: Path, **extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), SARFT_HOME=str(home), OMP_NUM_THREADS="1", **extra)


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "artifacts" / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("normalisation", ["published", "answer"])
def test_torchrun_training_matches_one_process(tmp_path, tiny_model_dir, normalisation):
    """Two processes x micro-batch 2 x accumulation 2 = one process x 4 x 2: the same 8 samples
    per optimizer step (both log the same D_h rows per step), the same step count for one epoch
    (a world that did not form would run 4 steps), losses within 1e-5 relative, LoRA weights
    within 1e-4 relative (Frobenius, per tensor; float32 summation order only: measured ~1e-6).
    The per-row ("published") normalisation weighs every sample alike however rows are split;
    the default ("answer") one divides by the answer tokens of the whole step, summed over the
    processes and micro-batches, so a split changes nothing there either. The logged KL is a
    difference of two entropy-sized float32 terms (~10 here), so it agrees to ~1e-6 absolute."""
    common = ["train", "--method", "sarft", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--limit", "16",
              "--epochs", "1", "--grad-accum", "2", "--lr", "1e-3", "--normalisation", normalisation, "--seed", "0"]
    one = subprocess.run([sys.executable, "-m", "sarft_core", *common, "--batch-size", "4", "--out", str(tmp_path / "one")],
                         cwd=ROOT, env=_env(tmp_path / "home1"), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "sarft_core", *common, "--batch-size", "2",
                          "--out", str(tmp_path / "two")],
                         cwd=ROOT, env=_env(tmp_path / "home2", **({"ACCELERATE_USE_CPU": "1"} if normalisation == "published" else {})),
                         capture_output=True, text=True, timeout=300)  # "answer": a bare torchrun on the CPU, no accelerate variable
    # the ranks' own words come first in stderr, torchrun's summary last: show both, and the run's status
    said = [line for line in two.stderr.splitlines() if "error" in line.lower() or "Traceback" in line][:20]
    assert two.returncode == 0, "\n".join(said) + "\n...\n" + two.stderr[-1500:] + "\nstatus: " + (
        (tmp_path / "two" / "status.json").read_text() if (tmp_path / "two" / "status.json").is_file() else "none")
    status = [json.loads((tmp_path / r / "status.json").read_text()) for r in ("one", "two")]
    assert [s["state"] for s in status] == ["completed", "completed"] and status[0]["step"] == status[1]["step"] == 2
    logs = [[json.loads(line) for line in open(tmp_path / r / "logs.jsonl")] for r in ("one", "two")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2]
    assert [r["harmful_in_batch"] for r in logs[0]] == [r["harmful_in_batch"] for r in logs[1]]
    for a, b in zip(*logs):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["kl"] == pytest.approx(a["kl"], rel=1e-3, abs=5e-6)
    wa, wb = _adapter(tmp_path / "one"), _adapter(tmp_path / "two")
    assert wa.keys() == wb.keys() and len(wa) == 8
    for k in wa:
        assert float((wa[k] - wb[k]).norm() / wa[k].norm()) < 1e-4, k


@pytest.mark.slow
def test_survey_with_two_workers_equals_one_worker(tmp_path, tiny_model_dir):
    """The same screening with --workers 2 and --workers 1 (separate score caches): the same
    per-role results and the same table."""
    traits = tmp_path / "traits.csv"
    traits.write_text("role,malevolence,aggression,deceptiveness,benevolence\nBaron Vex Morrow,0.95,0.8,0.8,0.05\n"
                      "Sister Alma Reyes,0.05,0.05,0.1,0.95\nCaptain Nell Corran,0.3,0.5,0.3,0.6\n")

    def survey(workers: int, name: str):
        out = tmp_path / name
        cmd = [sys.executable, "-m", "sarft_core", "survey", "--roles", "all", "--screen", "--limit", "4", "--exact",
               "--model", str(tiny_model_dir), "--traits", "csv", "--traits-csv", str(traits), "--workers", str(workers),
               "--no-progress", "--out", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path / f"home-{name}"), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return out

    one, two = survey(1, "one"), survey(2, "two")
    ta = pd.read_csv(one / "table.csv").sort_values("role").reset_index(drop=True)
    tb = pd.read_csv(two / "table.csv").sort_values("role").reset_index(drop=True)
    assert len(ta) == 3 and list(ta.columns) == list(tb.columns)
    numeric = [c for c in ta.columns if pd.api.types.is_numeric_dtype(ta[c]) and not c.endswith(("seconds", "_s"))]
    assert {"samples", "flagged_fraction"} <= set(numeric)
    pd.testing.assert_frame_equal(ta[numeric], tb[numeric], check_exact=False, atol=1e-6)
    for role_dir in sorted((one / "roles").iterdir()):
        if role_dir.is_dir() and (role_dir / "scores.parquet").is_file():
            a, b = pd.read_parquet(role_dir / "scores.parquet"), pd.read_parquet(two / "roles" / role_dir.name / "scores.parquet")
            assert list(a.id) == list(b.id) and (a.harmful == b.harmful).all()
            assert (a.logp_role - b.logp_role).abs().max() < 1e-5
