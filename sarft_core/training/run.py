"""One training run, start to finish: data -> D_h -> model -> Trainer -> weights in RUN_DIR.

Used by ``python -m sarft_core train`` (directly or under ``accelerate launch``) and by the
dashboard's job runner. The run directory contract (read by sarft_core.models):

- ``config.json``: kind = train, ``model`` = base model spec, every option below;
- ``status.json``: running (step, max_steps, eta_s, pid, last_checkpoint) ... completed only at
  the very end, after the weights are written; cancelled on SIGTERM / SIGINT after a checkpoint;
- ``logs.jsonl``: one line per optimizer step;
- ``artifacts/dh_ids.json``: the final D_h (and dropped samples, frozen layers);
- ``artifacts/adapter`` (LoRA, safetensors) or ``artifacts/model`` (full weights);
- ``checkpoints/checkpoint-N``: what ``--resume`` continues from.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from sarft_core.errors import SarftError
from sarft_core.training import selection
from sarft_core.training.methods import get_method, select_dh

# the options and their one validation live in training.config (runconfig reads them without this module)
from sarft_core.training.config import (  # noqa: F401 (re-exported: the training API)
    ATTENTION, AUTOCAST, BASELINE_USES, DEFAULT_LR, DROP_METHODS, KL_METHODS, METHODS, PEFT_KINDS, RANKINGS, REF_DTYPES,
    REPORT_TO, SAMPLING, TrainConfig, check_report_to, planned_steps,
)


def run_config(cfg: TrainConfig) -> dict:
    """What a training run's config.json holds (:class:`sarft_core.runconfig.RunConfig`, kind train):
    read back by the loader, resume, the dashboard and reports through RunConfig."""
    from sarft_core.runconfig import RunConfig

    return RunConfig.for_training(cfg).to_dict()


def training_inputs(cfg: TrainConfig) -> dict[str, str]:
    """Content digests of every file a run reads (samples, profiles, overrides): recorded in its
    config.json, so that a resume never trains its later steps on other data than its first."""
    from sarft_core.data import DEMO_PROFILES, DEMO_SAMPLES
    from sarft_core.store import inputs_fingerprint

    return inputs_fingerprint({"data": cfg.data or DEMO_SAMPLES, "profiles": cfg.profiles or DEMO_PROFILES, "overrides": cfg.overrides})


def check_same_inputs(out: Path, stored: dict, cfg: TrainConfig) -> None:
    """A resume reads the run's files again: refuse it when one changed since the run began (a run
    made before digests were recorded has none to compare, and resumes as before)."""
    from sarft_core.store import changed_inputs

    recorded = stored.get("inputs")
    if not isinstance(recorded, dict):
        return
    changed = changed_inputs(recorded, training_inputs(cfg))
    if changed:
        names = {"data": f"the data file {cfg.data or '(demo samples)'}", "profiles": f"the profiles file {cfg.profiles or '(demo profiles)'}",
                 "overrides": f"the overrides file {cfg.overrides}"}
        raise SarftError(f"{out} cannot be resumed: {', '.join(names.get(k, k) for k in changed)} changed since the run began "
                         "(its first steps trained on the old content)",
                         "restore the file(s), or start a new run on the new content with another --out")


def check_model_depth(cfg: TrainConfig) -> None:
    """``--freeze-layers`` against the model's layer count, read from its config (no weights
    loaded), before the run directory exists. A model whose config cannot be read this way is
    checked again when it is loaded."""
    if cfg.method != "sppft" or not cfg.freeze_layers:
        return
    from sarft_core.models import resolve_model_dir
    from sarft_core.training.sppft import parse_layer_range

    try:
        from transformers import AutoConfig

        where = resolve_model_dir(cfg.model or None)[1]
        depth = AutoConfig.from_pretrained(str(where), trust_remote_code=cfg.trust_remote_code).num_hidden_layers
    except Exception:  # noqa: BLE001  (a hub id offline, a run directory: the load-time check decides)
        return
    if isinstance(depth, int) and depth > 0:
        parse_layer_range(cfg.freeze_layers, depth)


def check_launch_environment() -> None:
    """Refuse a GPU accelerate config (DeepSpeed, FSDP, multi-GPU, use_cpu: false) without a GPU."""
    import torch

    if torch.cuda.is_available():
        return
    env = os.environ
    truthy = lambda v: str(v).lower() in ("1", "true", "yes")  # noqa: E731
    wants_gpu = truthy(env.get("ACCELERATE_USE_DEEPSPEED")) or truthy(env.get("ACCELERATE_USE_FSDP"))
    if "ACCELERATE_USE_CPU" in env and not truthy(env["ACCELERATE_USE_CPU"]):
        wants_gpu = True  # the simple launcher with use_cpu: false (single_gpu.yaml)
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    by_accelerate = any(k.startswith("ACCELERATE_") for k in env)  # a bare torchrun sets none of them
    if world > 1 and by_accelerate and not truthy(env.get("ACCELERATE_USE_CPU", "")):
        wants_gpu = True  # the multi-GPU launcher (multi_gpu_ddp.yaml) sets no use_cpu flag
    if wants_gpu:
        raise SarftError(
            "this accelerate configuration needs a CUDA GPU, but none is visible",
            "run on a GPU machine, or launch with --config_file configs/accelerate/cpu.yaml (or without accelerate)",
        )


def training_attention(choice: str, on_cuda: bool) -> str:
    """The attention kernel a run trains with: the explicit choice, or eager on the CPU, sdpa on a GPU."""
    if choice != "auto":
        return choice
    return "sdpa" if on_cuda else "eager"


def _load_inputs(cfg: TrainConfig):
    from sarft_core.data import DEMO_PROFILES, DEMO_SAMPLES, get_profile, load_profiles, load_samples

    profiles = load_profiles(cfg.profiles or DEMO_PROFILES)
    profile = get_profile(profiles, cfg.role)
    samples = load_samples(Path(cfg.data) if cfg.data else DEMO_SAMPLES, role=profile.name, columns=cfg.columns,
                           answer_index=cfg.answer_index, limit=cfg.limit)
    if not samples:
        raise SarftError("no training samples", "give a data file with samples for this role")
    return samples, profile


def _erosion_ranking(lm, samples, rows, log=print) -> dict[str, float]:
    """{id: measured erosion of refusal} (minus the influence of score --validate, its defaults)."""
    from sarft_core.scoring.validate import validate_flags

    validation = validate_flags(lm, samples, rows, progress=lambda phase: log(f"influence: {phase}"))
    return {i: -v for i, v in validation["influence"].items()}


def choose_samples(cfg: TrainConfig, lm, samples, profile, stop=None, log=print) -> tuple[list, dict[str, bool], dict]:
    """(samples to train on, {id: in D_h}, record for dh_ids.json)."""
    record: dict = {"method": cfg.method, "tau": cfg.tau}
    flags = {s.id: False for s in samples}
    method = get_method(cfg.method)
    if method.dh is not None or method.drop is not None or cfg.train_subset != "all":
        from sarft_core.scoring import ScoreOptions, score_role

        # the trainer needs the flags only, not how sure each is: no reworded passes
        options = ScoreOptions(passes=method.passes, max_prompt_tokens=cfg.max_prompt_tokens, max_answer_tokens=cfg.max_answer_tokens, wordings=0)
        result = score_role(lm, samples, profile, options, should_stop=(lambda: bool(stop)) if stop is not None else None)
        log(f"RDS scores: {result.stats['samples']} samples ({result.stats['from_cache']} from cache) in {result.stats['seconds']:.1f} s")
        rows = result.rows
        record["scores_dir"] = result.stats["cache_dir"]
        ranking = None
        if cfg.rank_by != "margin":
            ranking = _erosion_ranking(lm, samples, rows, log)
            record["rank_by"] = cfg.rank_by
        if cfg.train_subset != "all":
            kept = selection.ranked_subset(ranking or selection.margins_of(rows), cfg.subset_fraction, cfg.train_subset, cfg.seed)
            samples = [s for s in samples if s.id in kept]
            rows = [r for r in rows if str(r["id"]) in kept]
            flags = {s.id: False for s in samples}
            ranking = {i: v for i, v in ranking.items() if i in kept} if ranking is not None else None
            record.update(train_subset=cfg.train_subset, subset_fraction=cfg.subset_fraction, trained_ids=sorted(kept))
            log(f"training on the {cfg.train_subset} {len(kept)} samples by {cfg.rank_by}")
        if method.dh is not None:
            flags = _dh_flags(cfg, rows, ranking, result, record, log)
        elif method.drop is not None:
            samples, flags = _drop_selection(cfg, method.drop, rows, samples, record)
    record["dh_ids"] = selection.ids_where(flags)
    record.update(selection.summary(flags))
    return samples, flags, record


def _dh_flags(cfg: TrainConfig, rows, ranking, result, record: dict, log=print) -> dict[str, bool]:
    """D_h of a method with a D_h rule: a budget of the ranking, or RDS's flags after the overrides."""
    if cfg.dh_fraction is not None:
        record.update(dh_fraction=cfg.dh_fraction, rds_ids=selection.ids_where(selection.rds_flags(rows, cfg.tau)), overrides={})
        return select_dh(cfg.method, rows, cfg.tau, None, cfg.seed, dh_fraction=cfg.dh_fraction, ranking=ranking)
    opath = Path(cfg.overrides) if cfg.overrides else selection.overrides_path(result.stats["cache_dir"])
    overrides = selection.load_overrides(opath) if (cfg.overrides or opath.is_file()) else {}
    if overrides:
        log(f"applying {len(overrides)} per-sample override(s) from {opath}")
        record["overrides_file"] = str(opath)
    record["rds_ids"] = selection.ids_where(selection.apply_overrides(selection.rds_flags(rows, cfg.tau), overrides))
    flags = select_dh(cfg.method, rows, cfg.tau, overrides, cfg.seed)
    record["overrides"] = overrides
    return flags


def _drop_selection(cfg: TrainConfig, rule, rows, samples, record: dict) -> tuple[list, dict[str, bool]]:
    """A drop rule's choice: dropped from training, or (--baseline-use kl) anchored as D_h."""
    chosen = rule.pick(rows, cfg.drop_fraction)
    record.update(drop_fraction=cfg.drop_fraction, baseline_use=cfg.baseline_use, selected_ids=sorted(chosen))
    if cfg.baseline_use == "kl":
        return samples, {s.id: s.id in chosen for s in samples}
    samples = selection.keep_only(samples, chosen)
    record["dropped_ids"] = sorted(chosen)
    if not samples:
        raise SarftError("every sample was dropped", "lower --drop-fraction")
    return samples, {s.id: False for s in samples}


def _build_model(cfg: TrainConfig, lm, record: dict, log=print):
    """The trainable model (LoRA-wrapped or full) and, for full fine-tuning with KL, a frozen copy."""
    import copy

    from sarft_core.training import sppft

    model = lm.model
    model.train()
    block = None
    if cfg.method == "sppft":
        n_layers = len(sppft.decoder_layers(model))
        if cfg.freeze_layers:
            block = sppft.parse_layer_range(cfg.freeze_layers, n_layers)
            record["sppft"] = {"start": block[0], "end": block[1], "source": "--freeze-layers"}
        else:
            from sarft_core.data import PROBES

            benign, harmful = sppft.load_probe_prompts(PROBES)
            found = sppft.detect_safety_layers(model, lm.tokenizer, benign, harmful)
            block = (found["start"], found["end"])
            record["sppft"] = dict(found, source="detected on data/probes.jsonl")
        log(f"SPPFT: freezing layers {block[0]}-{block[1]} of {n_layers}")
    ref_model = None
    if cfg.peft == "lora":
        from peft import LoraConfig, get_peft_model

        model.requires_grad_(False)
        kwargs = {}
        if block is not None:
            n_layers = len(sppft.decoder_layers(model))
            kwargs["layers_to_transform"] = [i for i in range(n_layers) if not block[0] <= i <= block[1]]
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM", **kwargs)
        import torch

        torch.manual_seed(cfg.seed)  # --seed also fixes the LoRA initialisation: a rerun trains the same weights
        try:
            model = get_peft_model(model, lora)
        except ValueError as exc:
            raise SarftError(f"LoRA could not be applied: {exc}", "check --lora-targets against the model's module names (e.g. q_proj,v_proj)") from None
    else:
        if cfg.effective_lambda > 0 or get_method(cfg.method).reference_tokens:
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        if block is not None:
            sppft.freeze_layers(model, *block)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    record["trainable_parameters"] = trainable
    return model, ref_model


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, stop=None, log=print) -> dict:
    """Run (or resume) one training job into ``out``; returns the final status."""
    from sarft_core.store import OwnerLock, RunDir, claim_output_dir, read_json_object

    out = Path(out)
    existing = RunDir(out)
    if resume:
        if not existing.config_path.is_file():
            raise SarftError(f"nothing to resume in {out}", "give the --out of an earlier training run, or drop --resume")
        stored = read_json_object(existing.config_path, None)
        if stored is None:
            raise SarftError(f"{existing.config_path} is damaged (not a JSON object), so the run cannot be resumed",
                             "start a new run with another --out")
        if stored.get("kind") != "train":
            raise SarftError(f"{out} is not a training run", "give the --out of an earlier training run")
        if existing.is_complete:
            raise SarftError(f"training run {out} is already complete", "start a new run with another --out")
        status = existing.status()
        if status.get("state") == "running" and _alive(status.get("pid")):
            raise SarftError(f"training run {out} is still running (pid {status.get('pid')})", f"stop it first (kill -TERM {status.get('pid')}) or wait for it")
        cfg = TrainConfig.from_dict(stored.get("train", {}))
    elif existing.status_path.is_file():
        claim_output_dir(out, "train", "training run")  # a run of another kind is named as such
        raise SarftError(f"{out} already holds a run (state: {existing.status().get('state')})", "add --resume to continue it, or choose another --out")
    cfg.validate()
    check_launch_environment()
    check_model_depth(cfg)  # every option is checked before the claim, which may make the folder
    claim_output_dir(out, "train", "training run")
    samples, profile = _load_inputs(cfg)  # bad input fails here, before a run directory exists
    if resume:
        check_same_inputs(out, stored, cfg)
    # one owner per run directory: a second `train` into the same --out fails here, clearly,
    # instead of interleaving its logs, config and weights with the first (ranks > 0 follow rank 0)
    owner = OwnerLock(out, "training run").acquire() if int(os.environ.get("RANK", "0") or 0) == 0 else None
    try:
        if not resume and existing.status_path.is_file():  # the authoritative check, now that we own the folder
            raise SarftError(f"{out} already holds a run (state: {existing.status().get('state')})", "add --resume to continue it, or choose another --out")
        return _train(cfg, out, existing, resume, samples, profile, stop, log)
    finally:
        if owner is not None:
            owner.release()


def _train(cfg: TrainConfig, out: Path, existing, resume: bool, samples, profile, stop, log) -> dict:
    import torch
    from transformers import TrainingArguments

    from sarft_core.models import load_model
    from sarft_core.runconfig import record_model
    from sarft_core.store import RunDir, atomic_write_json, create_run
    from sarft_core.training.trainer import (
        Collator, RunCallback, SarftTrainer, StopRequest, build_examples, last_checkpoint, resume_checkpoint, truncate_logs,
    )

    stop = stop if stop is not None else StopRequest().install()

    from accelerate import PartialState

    ckpt_dir = out / "checkpoints"
    on_cuda = torch.cuda.is_available() and not cfg.device.startswith("cpu")
    if cfg.report_to == "tensorboard":  # beside the run, not under checkpoints/ (removed when it completes)
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(out / "tensorboard"))
    # created first: under `accelerate launch` / torchrun it sets up the process group
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        report_to=cfg.report_to,
        # a tracker gets the Trainer's loss every step; without one the Trainer logs nothing
        logging_strategy="no" if cfg.report_to == "none" else "steps",
        logging_steps=1,
        seed=cfg.seed,
        bf16=cfg.autocast == "bf16" or (cfg.autocast == "auto" and on_cuda and torch.cuda.is_bf16_supported()),
        use_cpu=not on_cuda,
        remove_unused_columns=False,
        train_sampling_strategy=cfg.sampling,
        dataloader_num_workers=0,
        disable_tqdm=int(os.environ.get("RANK", "0") or 0) != 0,
    )
    state = PartialState()
    is_main = args.process_index == 0
    if not is_main:
        log = lambda *_a, **_k: None  # noqa: E731  (one voice per job)
    run = existing if resume else None
    if is_main and not resume:
        run = create_run("train", dict(run_config(cfg), inputs=training_inputs(cfg)), path=out)
    state.wait_for_everyone()
    run = run or RunDir(out)
    checkpoint = resume_checkpoint(ckpt_dir, log if is_main else (lambda *_a, **_k: None)) if resume else None
    started = time.time()
    try:
        if is_main:
            run.set_status("running", pid=os.getpid(), started=started, method=cfg.method, role=cfg.role)
            if resume:
                kept = truncate_logs(run, int(checkpoint.name.split("-")[1]) if checkpoint else 0)
                log(f"resuming {out} from {checkpoint.name if checkpoint else 'the start (no checkpoint yet)'} ({kept} logged steps kept)")
        device = str(args.device) if args.world_size > 1 else cfg.device
        lm = load_model(cfg.model or None, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
        if is_main:
            record_model(out, lm.spec, lm.fingerprint, "train")  # the base that ran, as resolved (embedded-aligned by default)
        samples, flags, record = choose_samples(cfg, lm, samples, profile, stop, log)
        if stop:
            raise _Stopped()
        if is_main:
            atomic_write_json(run.artifacts / "dh_ids.json", record)
            if not resume:  # the step count is known now: views show "0 / N", not "0 / ?", until the first step
                run.set_status("running", step=0, max_steps=planned_steps(len(samples), cfg, args.world_size))
        lm.model.config.use_cache = False
        kernel = training_attention(cfg.attention, on_cuda)
        if kernel != getattr(lm.model.config, "_attn_implementation", None):
            try:
                lm.model.set_attn_implementation(kernel)
                log(f"attention kernel for training: {kernel} (--attention {cfg.attention})")
            except (AttributeError, ValueError) as e:  # a model without that kernel keeps its own
                log(f"attention kernel unchanged ({e})")
        model, ref_model = _build_model(cfg, lm, record, log)
        if is_main:
            atomic_write_json(run.artifacts / "dh_ids.json", record)
        method = get_method(cfg.method)
        examples = build_examples(lm.tokenizer, samples, flags, cfg.max_prompt_tokens, cfg.max_answer_tokens,
                                  system=method.system_prompt(profile))
        trainer = SarftTrainer(
            model=model, args=args, train_dataset=examples, data_collator=Collator(lm.tokenizer.pad_token_id),
            processing_class=lm.tokenizer, lam=cfg.effective_lambda, kl_direction=cfg.kl_direction,
            normalisation=cfg.normalisation, ref_model=ref_model, ref_dtype=cfg.ref_dtype, method=method,
        )
        callback = RunCallback(trainer, run, stop, cfg.effective_lambda, is_main)
        trainer.add_callback(callback)
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if callback.stopped_by_request:
            raise _Stopped()
        weights = run.artifacts / ("adapter" if cfg.peft == "lora" else "model")
        trainer.save_model(str(weights))
        state.wait_for_everyone()
        if is_main:
            # weights are safetensors; the Trainer also pickles its arguments there, which we do not ship
            (weights / "training_args.bin").unlink(missing_ok=True)
        final = {"state": "completed", "step": result.global_step}
        if is_main:
            final = run.set_status(
                "completed", step=result.global_step, max_steps=trainer.state.max_steps, seconds=time.time() - started,
                train_loss=result.training_loss, weights=str(weights), dh=record.get("dh", 0), samples=len(samples),
                last_checkpoint=None,
            )
            # a completed run cannot be resumed: its checkpoints (optimizer state) are dead weight
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        return final
    except _Stopped:
        if is_main:
            ck = last_checkpoint(ckpt_dir)
            run.set_status("cancelled", reason="stopped by signal", last_checkpoint=str(ck) if ck else None,
                           last_checkpoint_step=int(ck.name.split("-")[1]) if ck else 0)
        return run.status()
    except Exception as exc:
        from sarft_core.scoring import Cancelled

        if isinstance(exc, Cancelled):
            if is_main:
                run.set_status("cancelled", reason="stopped while scoring (finished scores are cached)")
            return run.status()
        if is_main:
            message = (exc.problem if isinstance(exc, SarftError) else str(exc).splitlines()[0] if str(exc) else "") or type(exc).__name__
            run.set_status("failed", error=message, **({"fix": exc.fix} if isinstance(exc, SarftError) and exc.fix else {}))
        if isinstance(exc, torch.OutOfMemoryError):
            raise SarftError("out of memory during training", "lower --batch-size (raise --grad-accum to keep the effective batch), use --peft lora, or a larger GPU") from exc
        raise
    finally:
        if hasattr(stop, "uninstall"):
            stop.uninstall()


class _Stopped(Exception):
    """Internal: training stopped on request after a checkpoint."""


def _alive(pid) -> bool:
    """Whether a process with this id runs on this machine (and is not us)."""
    import psutil

    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    return psutil.pid_exists(pid)
