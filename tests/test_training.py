"""Training on the tiny random Llama: the loss, the reference model, D_h choices, run lifecycle."""
from __future__ import annotations

import json

import pytest
import torch

from sarft_core.errors import SarftError
from sarft_core.store import RunDir, read_jsonl
from sarft_core.training import TrainConfig, check_launch_environment, train
from sarft_core.training.run import choose_samples
from sarft_core.training.trainer import CHECKPOINT_TRIGGER, Collator, SarftTrainer, build_examples

ROLE = "Baron Vex Morrow"


def quiet(*_a, **_k):
    pass


def small_config(model_dir, **overrides) -> TrainConfig:
    base = dict(method="sft", role=ROLE, model=str(model_dir), dtype="float32", device="cpu", limit=8,
                batch_size=2, grad_accum=1, max_steps=3, lora_r=4, lora_alpha=8, save_steps=1000)
    base.update(overrides)
    return TrainConfig(**base)


def make_trainer(model, tokenizer, tmp_path, lam=0.5, normalisation="answer", ref_dtype="same"):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "ck"), use_cpu=True, report_to="none", remove_unused_columns=False,
                             per_device_train_batch_size=2, disable_tqdm=True)
    return SarftTrainer(model=model, args=args, train_dataset=[{"input_ids": [1], "prompt_len": 1, "harmful": False, "index": 0}],
                        data_collator=Collator(tokenizer.pad_token_id), lam=lam, normalisation=normalisation, ref_dtype=ref_dtype)


@pytest.fixture
def lora_model(tiny_model_dir):
    """Tiny Llama + LoRA with non-zero B matrices, so the adapter changes the outputs."""
    from peft import LoraConfig, get_peft_model

    from sarft_core.models import load_model

    lm = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    model = get_peft_model(lm.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, lm.tokenizer


@pytest.fixture
def batch(tiny_lm, demo_samples):
    samples = demo_samples[:4]
    flags = {samples[0].id: True, samples[2].id: True}
    return samples, flags


def collate(tokenizer, samples, flags):
    return Collator(tokenizer.pad_token_id)(build_examples(tokenizer, samples, flags))


def test_kl_zero_for_lambda_zero_and_empty_dh_positive_otherwise(lora_model, batch, tmp_path):
    model, tok = lora_model
    samples, flags = batch
    with_dh = collate(tok, samples, flags)
    without_dh = collate(tok, samples, {})
    for normalisation in ("answer", "published"):
        trainer = make_trainer(model, tok, tmp_path, lam=0.5, normalisation=normalisation)
        loss = trainer.compute_loss(model, with_dh)
        stats = trainer.step_stats.pop()
        assert stats["kl"] > 1e-4 and stats["harmful_in_batch"] == 2
        assert loss.item() == pytest.approx(stats["ce"] + 0.5 * stats["kl"], rel=1e-5)
        trainer.compute_loss(model, without_dh)
        assert trainer.step_stats.pop()["kl"] == 0.0
        zero = make_trainer(model, tok, tmp_path, lam=0.0, normalisation=normalisation)
        loss0 = zero.compute_loss(model, with_dh)
        stats0 = zero.step_stats.pop()
        assert stats0["kl"] == 0.0 and loss0.item() == pytest.approx(stats0["ce"], rel=1e-6)


def test_lora_only_adapter_weights_get_gradients(lora_model, batch, tmp_path):
    model, tok = lora_model
    samples, flags = batch
    trainer = make_trainer(model, tok, tmp_path, lam=0.5)
    model.zero_grad()
    trainer.compute_loss(model, collate(tok, samples, flags)).backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert with_grad and all("lora_" in n for n in with_grad)
    assert any("lora_A" in n for n in with_grad)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


def test_reference_is_the_base_model_with_the_adapter_disabled(lora_model, tiny_lm, batch, tmp_path):
    model, tok = lora_model
    samples, flags = batch
    b = collate(tok, samples, flags)
    trainer = make_trainer(model, tok, tmp_path)
    keep = torch.arange(0, b["input_ids"].shape[1])
    ref = trainer._reference_logits(model, b["input_ids"], b["attention_mask"], keep)
    with torch.no_grad():
        base = tiny_lm.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        adapted = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    mask = b["attention_mask"].bool()
    assert torch.allclose(ref[mask], base[mask], atol=1e-5)
    assert not torch.allclose(adapted[mask], base[mask], atol=1e-3)  # the adapter is back on afterwards


def test_bf16_reference_stays_close_to_the_exact_one(lora_model, tiny_lm, batch, tmp_path):
    model, tok = lora_model
    samples, flags = batch
    b = collate(tok, samples, flags)
    keep = torch.arange(0, b["input_ids"].shape[1])
    exact = make_trainer(model, tok, tmp_path)._reference_logits(model, b["input_ids"], b["attention_mask"], keep)
    fast = make_trainer(model, tok, tmp_path, ref_dtype="bfloat16")._reference_logits(model, b["input_ids"], b["attention_mask"], keep)
    mask = b["attention_mask"].bool()
    assert fast.dtype == torch.bfloat16
    diff = (fast.float()[mask] - exact[mask]).abs().max().item()
    assert 0 < diff < 0.1  # bf16 rounding, nothing more
    # the KL term is built on it as usual
    trainer = make_trainer(model, tok, tmp_path, ref_dtype="bfloat16")
    trainer.compute_loss(model, b)
    assert trainer.step_stats.pop()["kl"] > 1e-4  # the adapter (non-zero B) moved the policy away


def test_loss_decreases_on_tiny_model(tiny_model_dir, tmp_path):
    cfg = small_config(tiny_model_dir, peft="full", lr=3e-3, limit=4, batch_size=4, max_steps=6)
    status = train(cfg, tmp_path / "run", log=quiet)
    assert status["state"] == "completed" and status["step"] == 6
    logs = RunDir(tmp_path / "run").logs()
    assert [r["step"] for r in logs] == list(range(1, 7))
    assert logs[-1]["ce"] < logs[0]["ce"] - 0.5
    for key in ("step", "max_steps", "loss", "ce", "kl", "lambda", "lr", "harmful_in_batch", "tokens_per_s", "eta_s", "epoch"):
        assert key in logs[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert (tmp_path / "run" / "artifacts" / "model" / "model.safetensors").is_file()
    from sarft_core.store import read_progress

    progress = read_progress(tmp_path / "run")  # structured progress of the optimizer steps
    assert progress["done"] == progress["total"] == 6 and progress["unit"] == "step" and progress["fraction"] == 1.0


def test_random_and_flip_pick_the_documented_sets(tiny_lm, demo_samples, demo_profiles, score_cache):
    from sarft_core.data import get_profile

    profile = get_profile(demo_profiles, ROLE)
    samples = demo_samples[:12]
    picks = {}
    for method in ("sarft", "random", "flip"):
        _, flags, record = choose_samples(TrainConfig(method=method, role=ROLE, seed=3), tiny_lm, samples, profile, log=quiet)
        picks[method] = {i for i, v in flags.items() if v}
        assert sorted(picks[method]) == record["dh_ids"]
    ids = {s.id for s in samples}
    assert picks["flip"] == ids - picks["sarft"]
    assert len(picks["random"]) == len(picks["sarft"])
    _, again, _ = choose_samples(TrainConfig(method="random", role=ROLE, seed=3), tiny_lm, samples, profile, log=quiet)
    assert {i for i, v in again.items() if v} == picks["random"]


def test_overrides_beside_the_scores_and_tau(tiny_lm, demo_samples, demo_profiles, score_cache):
    from sarft_core.data import get_profile
    from sarft_core.training import selection

    profile = get_profile(demo_profiles, ROLE)
    samples = demo_samples[:6]
    _, flags, record = choose_samples(TrainConfig(method="sarft", role=ROLE), tiny_lm, samples, profile, log=quiet)
    target = samples[0].id
    selection.save_overrides(selection.overrides_path(record["scores_dir"]), {target: not flags[target]})
    _, flags2, record2 = choose_samples(TrainConfig(method="sarft", role=ROLE), tiny_lm, samples, profile, log=quiet)
    assert flags2[target] is (not flags[target]) and record2["overrides"] == {target: not flags[target]}
    _, none, _ = choose_samples(TrainConfig(method="sarft", role=ROLE, tau=1e9), tiny_lm, samples, profile, log=quiet)
    assert sum(none.values()) == (1 if not flags[target] else 0)  # only the forced one


def test_seal_and_biselect_drop_samples(tiny_lm, demo_samples, demo_profiles, score_cache):
    from sarft_core.data import get_profile

    profile = get_profile(demo_profiles, ROLE)
    samples = demo_samples[:10]
    kept, flags, record = choose_samples(TrainConfig(method="seal", role=ROLE, drop_fraction=0.3), tiny_lm, samples, profile, log=quiet)
    assert len(kept) == 7 and len(record["dropped_ids"]) == 3 and not any(flags.values())
    kept, flags, record = choose_samples(TrainConfig(method="biselect", role=ROLE, drop_fraction=0.3, baseline_use="kl"),
                                         tiny_lm, samples, profile, log=quiet)
    assert len(kept) == 10 and sorted(i for i, v in flags.items() if v) == record["selected_ids"]


class StopAfterLoggedSteps:
    """A stop request that fires once the run has logged ``n`` steps (like a SIGTERM then)."""

    def __init__(self, run_dir, n):
        self.run_dir, self.n = run_dir, n

    def __bool__(self):
        return len(read_jsonl(RunDir(self.run_dir).log_path)) >= self.n


def test_stop_then_resume_reaches_the_same_final_step(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = small_config(tiny_model_dir, method="sarft", max_steps=5, limit=10)
    status = train(cfg, out, stop=StopAfterLoggedSteps(out, 2), log=quiet)
    assert status["state"] == "cancelled" and status["last_checkpoint_step"] == 2
    with pytest.raises(SarftError, match="not complete"):
        from sarft_core.models import load_model

        load_model(str(out))
    with pytest.raises(SarftError, match="--resume"):
        train(cfg, out, log=quiet)
    final = train(TrainConfig(), out, resume=True, log=quiet)
    assert final["state"] == "completed" and final["step"] == 5
    assert [r["step"] for r in RunDir(out).logs()] == [1, 2, 3, 4, 5]
    uninterrupted = train(cfg, tmp_path / "straight", log=quiet)
    assert uninterrupted["step"] == 5
    a, b = RunDir(out).logs()[-1], RunDir(tmp_path / "straight").logs()[-1]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    dh = json.loads((out / "artifacts" / "dh_ids.json").read_text())
    assert dh["method"] == "sarft" and dh["dh"] == len(dh["dh_ids"])
    with pytest.raises(SarftError, match="already complete"):
        train(TrainConfig(), out, resume=True, log=quiet)


def test_checkpoint_trigger_file(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT_TRIGGER).write_text("")
    seen = {}

    class Watch:
        def __bool__(self):
            ck = out / "checkpoints" / "checkpoint-1"
            seen.setdefault("ck1", ck.is_dir() and not (out / CHECKPOINT_TRIGGER).exists())
            return False

    status = train(small_config(tiny_model_dir, max_steps=2, limit=4), out, stop=Watch(), log=quiet)
    assert status["state"] == "completed"
    # at the end of step 2 the checkpoint asked for after step 1 exists and the trigger is consumed
    assert not (out / CHECKPOINT_TRIGGER).exists()


def test_answer_normalisation_is_one_token_mean_however_the_step_is_split(tiny_model_dir, tmp_path):
    """4 rows in one micro-batch = 2 micro-batches of 2 accumulated: the step's CE is the mean over
    all its answer tokens and the KL's divisor is all its rows, so the loss logs and the LoRA
    weights agree (float32 summation order only). Before the fix each micro-batch was its own
    token mean, which weighs the tokens of short answers more when rows are split. The logged KL
    is a difference of two entropy-sized float32 terms (~10 here): it agrees to ~1e-6 absolute."""
    from safetensors.torch import load_file

    runs = {}
    for name, (bs, ga) in {"whole": (4, 1), "split": (2, 2)}.items():
        cfg = small_config(tiny_model_dir, method="sarft", limit=8, batch_size=bs, grad_accum=ga, max_steps=2, lr=1e-2, lam=1.0)
        assert train(cfg, tmp_path / name, log=quiet)["state"] == "completed"
        runs[name] = (RunDir(tmp_path / name).logs(), load_file(str(tmp_path / name / "artifacts" / "adapter" / "adapter_model.safetensors")))
    (la, wa), (lb, wb) = runs["whole"], runs["split"]
    assert [r["harmful_in_batch"] for r in la] == [r["harmful_in_batch"] for r in lb] and sum(r["harmful_in_batch"] for r in la) > 0
    for a, b in zip(la, lb):
        assert b["ce"] == pytest.approx(a["ce"], rel=1e-5) and b["kl"] == pytest.approx(a["kl"], rel=1e-3, abs=5e-6)
    rel = {k: float((wa[k] - wb[k]).norm() / wa[k].norm().clamp(min=1e-12)) for k in wa}
    print("max relative weight difference", max(rel.values()))
    assert max(rel.values()) < 1e-4, rel


def test_trained_adapter_loads_as_a_model(tiny_model_dir, tmp_path):
    from sarft_core.models import load_model

    out = tmp_path / "run"
    train(small_config(tiny_model_dir, method="sarft", max_steps=2, limit=4, lr=1e-2), out, log=quiet)
    adapter = out / "artifacts" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and not list(adapter.glob("*.bin"))
    lm = load_model(str(out), dtype="float32", device="cpu")
    base = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(lm.model(input_ids=ids).logits, base.model(input_ids=ids).logits, atol=1e-4)


def test_sppft_freezes_a_layer_block(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    status = train(small_config(tiny_model_dir, method="sppft", max_steps=1, limit=2, freeze_layers="1"), out, log=quiet)
    assert status["state"] == "completed"
    cfg = json.loads((out / "artifacts" / "adapter" / "adapter_config.json").read_text())
    assert cfg["layers_to_transform"] == [0]
    rec = json.loads((out / "artifacts" / "dh_ids.json").read_text())
    assert rec["sppft"]["start"] == 1 and rec["sppft"]["end"] == 1


def test_sppft_detects_layers_and_freezes_full_params(tiny_lm):
    from sarft_core.data import PROBES
    from sarft_core.training import sppft

    benign, harmful = sppft.load_probe_prompts(PROBES)
    found = sppft.detect_safety_layers(tiny_lm.model, tiny_lm.tokenizer, benign[:4], harmful[:3])
    assert 0 <= found["start"] <= found["end"] < 2 and len(found["gap"]) == 2
    import copy

    model = copy.deepcopy(tiny_lm.model)
    frozen = sppft.freeze_layers(model, 0, 0)
    assert frozen > 0
    assert all(not p.requires_grad for p in sppft.decoder_layers(model)[0].parameters())
    assert all(p.requires_grad for p in sppft.decoder_layers(model)[1].parameters())


def test_clear_errors(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from sarft_core.cli import main

    def cli(*extra):
        return main(["train", "--role", ROLE, "--model", str(tiny_model_dir), "--out", str(tmp_path / "r"), *extra])

    assert cli("--method", "dpo") == 2
    assert "invalid choice: 'dpo'" in capsys.readouterr().err  # the choices come from the method registry
    assert cli("--lambda", "-1") == 2
    assert "--lambda must be a finite number in [0, 1000000], got -1.0" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"role": "Someone Else", "input": "hi", "output": "hello"}) + "\n")
    assert cli("--data", str(empty), "--method", "sft") == 2
    assert "error:" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    if not torch.cuda.is_available():
        with pytest.raises(SarftError, match="needs a CUDA GPU"):
            check_launch_environment()
        assert cli("--method", "sft") == 2
        assert "cpu.yaml" in capsys.readouterr().err


def test_report_to_is_checked_before_any_work(tiny_model_dir, tmp_path, capsys):
    import importlib.util

    from sarft_core.cli import main
    from sarft_core.training.run import REPORT_TO, check_report_to

    def cli(*extra):
        return main(["train", "--role", ROLE, "--model", str(tiny_model_dir), "--out", str(tmp_path / "r"), *extra])

    assert cli("--report-to", "comet") == 2
    assert "unknown --report-to 'comet'" in capsys.readouterr().err and not (tmp_path / "r").exists()
    check_report_to("none")
    for tracker, packages in REPORT_TO.items():
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            assert cli("--report-to", tracker) == 2
            err = capsys.readouterr().err
            assert f"--report-to {tracker} needs the {packages[0]} package" in err and f"pip install {packages[0]}" in err
    with pytest.raises(SarftError, match="unknown --report-to"):  # a config.json edited by hand, too
        small_config(tiny_model_dir, report_to="TensorBoard").validate()


@pytest.mark.skipif(not any(__import__("importlib.util").util.find_spec(p) for p in ("tensorboard", "tensorboardX")),
                    reason="tensorboard is not installed")
def test_report_to_tensorboard_writes_event_files_beside_the_run(tiny_model_dir, tmp_path):
    status = train(small_config(tiny_model_dir, limit=2, batch_size=2, max_steps=2, report_to="tensorboard"), tmp_path / "run", log=quiet)
    assert status["state"] == "completed"
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("limit,batch,accum,epochs", [(5, 2, 1, 1.0), (7, 2, 2, 2.0), (4, 4, 1, 1.5)])
def test_the_planned_step_count_is_the_trainers_own(tiny_model_dir, tmp_path, limit, batch, accum, epochs):
    """The Training page shows "0 / N" from launch (it showed "0 / ?" until the first step): N, set in
    the run's status before training starts, is the number of steps the trainer then takes."""
    from sarft_core.store import RunDir
    from sarft_core.training.run import planned_steps

    cfg = small_config(tiny_model_dir, limit=limit, batch_size=batch, grad_accum=accum, epochs=epochs, max_steps=-1)
    status = train(cfg, tmp_path / "run", log=quiet)
    assert status["state"] == "completed"
    steps = [r["step"] for r in RunDir(tmp_path / "run").logs() if "step" in r]
    assert planned_steps(limit, cfg) == status["max_steps"] == max(steps)
