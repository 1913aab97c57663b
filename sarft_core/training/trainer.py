"""RBO training on the Hugging Face Trainer: a custom ``compute_loss`` and a few callbacks.

Per micro-batch:
1. the reference forward, under ``no_grad``, on the D_h rows only: the LoRA model with its
   adapter disabled (the same weights, no copy), or a frozen copy for full fine-tuning;
2. the policy forward on every row; the LM head runs only on the positions that predict answer
   tokens (``logits_to_keep``) unless the ``published`` normalisation needs them all;
3. ``L = CE + lambda * KL`` from :mod:`sarft_core.training.losses`, or the method's own loss hook
   (its record in :mod:`sarft_core.training.methods`), which may read log p_ref of every answer token.
The RDS flags are computed once before training (and cached), never per batch.

The Trainer brings gradient accumulation, mixed precision, checkpoint/resume and
DDP / DeepSpeed / FSDP through ``accelerate launch``. Our callbacks add the per-step JSONL log,
status updates, the ``checkpoint.now`` trigger file and clean stops on SIGTERM / SIGINT.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from sarft_core.errors import SarftError
from sarft_core.store import Progress

from sarft_core.training.losses import (
    IGNORE_INDEX,
    ce_loss,
    kl_loss,
    prepare_reference,
    rbo_loss,
    token_kl_from_logp,
    token_nll,
)

CHECKPOINT_TRIGGER = "checkpoint.now"


# ---- data ------------------------------------------------------------------------------------

def build_examples(tokenizer, samples, flags: dict[str, bool], max_prompt_tokens: int = 512, max_answer_tokens: int = 128,
                   system: str = "") -> list[dict]:
    """One training example per sample: prompt (empty system turn, as published, unless the method
    trains under one) + answer ids."""
    from sarft_core.chat import encode

    out = []
    for i, s in enumerate(samples):
        e = encode(tokenizer, system, s.input, s.output, max_prompt_tokens, max_answer_tokens)
        out.append({"input_ids": e.input_ids, "prompt_len": len(e.prompt_ids), "harmful": bool(flags.get(s.id, False)), "index": i})
    return out


class Collator:
    """Right-pads a list of examples into tensors (labels are derived in compute_loss)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        # D_h rows first: the KL then reads a slice (a view) of the policy's log-probs, not a copy
        batch = sorted(batch, key=lambda b: not b["harmful"])
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[row, :n] = torch.tensor(b["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "prompt_lens": torch.tensor([b["prompt_len"] for b in batch], dtype=torch.long),
            "lengths": mask.sum(1),
            "harmful": torch.tensor([b["harmful"] for b in batch], dtype=torch.bool),
        }


def answer_targets(input_ids: torch.Tensor, prompt_lens: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Targets (B, K) for the logits at ``positions``: the next token when it is an answer token."""
    nxt = positions.unsqueeze(0) + 1
    valid = (nxt >= prompt_lens.unsqueeze(1)) & (nxt < lengths.unsqueeze(1))
    gathered = input_ids.gather(1, nxt.clamp(max=input_ids.shape[1] - 1).expand(input_ids.shape[0], -1))
    return torch.where(valid, gathered, torch.full_like(gathered, IGNORE_INDEX))


# ---- the trainer -----------------------------------------------------------------------------

class SarftTrainer(Trainer):
    def __init__(self, *args, lam: float = 0.0, kl_direction: str = "ref||theta", normalisation: str = "answer", ref_model=None,
                 ref_dtype: str = "same", method=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method = method  # its loss hook, when it has one, replaces CE + lambda * KL
        self.lam = float(lam)
        # "bfloat16": the no-grad reference forward runs under bf16 autocast (the published
        # setup trained in bf16 throughout); "same": the policy's own precision
        self.ref_dtype = ref_dtype
        self.kl_direction = kl_direction
        self.normalisation = normalisation
        self.ref_model = ref_model
        # the Trainer passes no token count of its own (our batches have no labels); for "published"
        # the loss is a per-micro-batch mean and the Trainer divides it by the accumulation steps;
        # for "answer" each micro-batch's loss is its share of the step's token mean (divided by the
        # step's totals over accumulation and processes), so the Trainer must not divide it again
        self.model_accepts_loss_kwargs = False
        if normalisation == "answer" and not hasattr(Trainer, "loss_is_scaled_for_ga"):
            # an older Trainer would divide our step-normalised loss by the accumulation again
            raise SarftError("this transformers is too old for the 'answer' normalisation (it needs Trainer.loss_is_scaled_for_ga, 5.19+)",
                             "pip install 'transformers>=5.19,<6' (requirements.txt), or train with --normalisation published")
        self.loss_is_scaled_for_ga = True if normalisation == "answer" else None
        self._step_totals: tuple[float, float] | None = None
        self.step_stats = _StepStats(summed=normalisation == "answer")
        self._logits_to_keep_ok = True
        if ref_model is not None:
            if self.is_fsdp_enabled or self.is_deepspeed_enabled:
                self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
            else:
                self.ref_model = ref_model.to(self.args.device)
            self.ref_model.eval()

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches; for the "answer" normalisation also the step's answer-token
        and row totals, summed over the processes (one all-reduce per optimizer step)."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.normalisation == "answer" and batch_samples:
            self._step_totals = step_totals(batch_samples, self.accelerator, device)
        return batch_samples, num_items

    def _logits(self, model, ids, mask, keep):
        if keep is not None and self._logits_to_keep_ok:
            try:
                return model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
            except TypeError:  # a model without logits_to_keep: full logits, then pick
                self._logits_to_keep_ok = False
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits if keep is None else logits[:, keep]

    def _reference_logits(self, model, ids, mask, keep):
        precision = torch.autocast(ids.device.type, dtype=torch.bfloat16) if self.ref_dtype == "bfloat16" else contextlib.nullcontext()
        with torch.no_grad(), precision:
            if self.ref_model is not None:
                with self.accelerator.autocast():
                    return self._logits(self.ref_model, ids, mask, keep)
            peft_model = self.accelerator.unwrap_model(model)
            with peft_model.disable_adapter():
                return self._logits(model, ids, mask, keep)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        plens, lens, harmful = inputs["prompt_lens"], inputs["lengths"], inputs["harmful"]
        rows, width = ids.shape
        if self.normalisation == "published":
            positions = torch.arange(width, device=ids.device)
            keep = None
        else:
            lo, hi = int(plens.min()) - 1, int(lens.max()) - 1
            positions = torch.arange(lo, hi, device=ids.device)
            keep = positions
        targets = answer_targets(ids, plens, lens, positions)
        answer_mask = targets != IGNORE_INDEX
        n_h = int(harmful.sum())
        # the collator puts D_h rows first; keep a general path for batches built elsewhere
        h = slice(0, n_h) if bool(harmful[:n_h].all()) else harmful.nonzero().squeeze(1)
        hook = getattr(self.method, "loss", None)
        if hook is not None:
            return self._hooked_loss(model, hook, ids, mask, plens, keep, positions, targets, answer_mask, n_h, return_outputs)
        use_kl = self.lam > 0 and n_h > 0
        reference = None
        if use_kl:  # before the policy forward, so its temporaries are gone when activations peak
            reference = prepare_reference(self._reference_logits(model, ids[h], mask[h], keep), self.kl_direction)
        logits = self._logits(model, ids, mask, keep)
        logp = torch.log_softmax(logits.float(), dim=-1)
        del logits  # log_softmax's backward needs only its output
        # "answer" in training: normalised by the step's totals, times the number of processes
        # (DDP averages their gradients), so the step's loss is one token mean however it is split
        totals = self._step_totals if (self.normalisation == "answer" and model.training) else None
        world = self.accelerator.num_processes if totals is not None else 1
        ce = ce_loss(token_nll(logp, targets), answer_mask, mask.sum(1), self.normalisation,
                     total_tokens=totals[0] / world if totals is not None else None)
        if use_kl:
            kl_mask = mask[h] if self.normalisation == "published" else answer_mask[h]
            kl = kl_loss(token_kl_from_logp(logp[h], reference), kl_mask, totals[1] / world if totals is not None else rows)
        else:
            kl = ce.new_zeros(())
        loss = rbo_loss(ce, kl, self.lam)
        share = 1.0 / world if totals is not None else None
        self.step_stats.add(loss.detach(), ce.detach(), kl.detach(), n_h, int(mask.sum()), share=share)
        return (loss, {"logp": logp}) if return_outputs else loss


    def _hooked_loss(self, model, hook, ids, mask, plens, keep, positions, targets, answer_mask, n_h, return_outputs):
        """A method's own objective on the batch (sarft_core.training.methods.LossBatch)."""
        from sarft_core.training.methods import LossBatch

        reference_logp = None
        if self.method.reference_tokens:  # before the policy forward, as the KL's reference
            ref_logp = torch.log_softmax(self._reference_logits(model, ids, mask, keep).float(), dim=-1)
            reference_logp = -token_nll(ref_logp, targets)
            del ref_logp
        logits = self._logits(model, ids, mask, keep)
        logp = torch.log_softmax(logits.float(), dim=-1)
        del logits
        totals = self._step_totals if (self.normalisation == "answer" and model.training) else None
        world = self.accelerator.num_processes if totals is not None else 1
        batch = LossBatch(logp=logp, targets=targets, answer_mask=answer_mask,
                          answer_index=positions.unsqueeze(0) + 1 - plens.unsqueeze(1), nonpad=mask.sum(1),
                          normalisation=self.normalisation, total_tokens=totals[0] / world if totals is not None else None,
                          reference_logp=reference_logp)
        loss, ce, kl = hook(batch)
        share = 1.0 / world if totals is not None else None
        self.step_stats.add(loss.detach(), ce.detach(), kl.detach(), n_h, int(mask.sum()), share=share)
        return (loss, {"logp": logp}) if return_outputs else loss


class NonFiniteLoss(SarftError):
    """The loss of a micro-batch is NaN or inf: stop the run as failed, never save its weights."""


def step_totals(batch_samples: list[dict], accelerator, device) -> tuple[float, float]:
    """(answer tokens, rows) of one optimizer step's micro-batches, summed over the processes.

    An answer token is a position whose target is an answer token: ``length - prompt_len`` per
    row, the count ``answer_targets`` marks (padding and prompt excluded)."""
    tokens = sum(float((b["lengths"] - b["prompt_lens"]).clamp(min=0).sum()) for b in batch_samples)
    rows = sum(float(b["input_ids"].shape[0]) for b in batch_samples)
    counts = torch.tensor([tokens, rows], dtype=torch.float64, device=device)
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    return float(counts[0]), float(counts[1])


@dataclass
class _StepStats:
    summed: bool = False  # values are shares of the step's value (add up), not micro-batch means
    loss: float = 0.0
    ce: float = 0.0
    kl: float = 0.0
    harmful: int = 0
    tokens: int = 0
    micro: int = 0

    def add(self, loss, ce, kl, harmful, tokens, share: float | None = None):
        w = 1.0 if share is None else share
        self.loss += w * float(loss)
        self.ce += w * float(ce)
        self.kl += w * float(kl)
        self.harmful += harmful
        self.tokens += tokens
        self.micro += 1

    def pop(self) -> dict:
        values = torch.tensor([self.loss, self.ce, self.kl, self.harmful, self.tokens, self.micro], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = "cuda" if torch.cuda.is_available() else "cpu"
            values = values.to(device)
            torch.distributed.all_reduce(values)
            values = values.cpu()
        loss, ce, kl, harmful, tokens, micro = values.tolist()
        summed = self.summed
        self.__init__(summed=summed)
        micro = 1 if summed else max(micro, 1)
        return {"loss": loss / micro, "ce": ce / micro, "kl": kl / micro, "harmful_in_batch": int(harmful), "tokens": int(tokens)}


# ---- stop requests and the per-step log ------------------------------------------------------

class StopRequest:
    """Set by SIGTERM / SIGINT; a second SIGINT interrupts at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handler(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def install(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. a dashboard worker): rely on request()
                pass
        return self

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.signal = signum

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()


def _any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (so all ranks save and stop together)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


class RunCallback(TrainerCallback):
    """Per-step JSONL metrics and status, checkpoint on request, clean stop on signals."""

    def __init__(self, trainer: SarftTrainer, run, stop: StopRequest, lam: float, is_main: bool):
        self.trainer = trainer
        self.run = run
        self.stop = stop
        self.lam = lam
        self.is_main = is_main
        self.trigger = Path(run.path) / CHECKPOINT_TRIGGER
        self.started = None
        self.start_step = 0
        self.last = None
        self.stopped_by_request = False
        self.saved_on_request = False
        self.progress = Progress(run.path, unit="step", phase="training")

    def on_train_begin(self, args, state, control, **kw):
        self.started = self.last = time.time()
        self.start_step = state.global_step

    def on_step_end(self, args, state, control, **kw):
        now = time.time()
        stats = self.trainer.step_stats.pop()  # summed over ranks: every rank sees the same values
        if not all(math.isfinite(stats[k]) for k in ("loss", "ce", "kl")):
            # stop before this step is logged or checkpointed: the update it made is already broken
            raise NonFiniteLoss(
                f"the training loss became non-finite at step {state.global_step} (loss {stats['loss']}, ce {stats['ce']}, "
                f"kl {stats['kl']}); training stopped and no weights were saved",
                "lower --lr or --lambda, or use --dtype float32; earlier checkpoints are kept, but the run is marked failed",
            )
        step_seconds = max(now - self.last, 1e-9)
        self.last = now
        done = state.global_step - self.start_step
        per_step = (now - self.started) / max(done, 1)
        eta = per_step * max(state.max_steps - state.global_step, 0)
        lr = self.trainer.lr_scheduler.get_last_lr()[0] if self.trainer.lr_scheduler is not None else args.learning_rate
        if self.is_main:
            self.run.log(
                step=state.global_step, max_steps=state.max_steps, loss=stats["loss"], ce=stats["ce"], kl=stats["kl"],
                **{"lambda": self.lam}, lr=lr, harmful_in_batch=stats["harmful_in_batch"],
                tokens_per_s=stats["tokens"] / step_seconds, eta_s=eta, epoch=state.epoch,
            )
            self.run.set_status("running", step=state.global_step, max_steps=state.max_steps, eta_s=eta, pid=os.getpid())
            self.progress(state.global_step, state.max_steps)
        if _any_rank(bool(self.stop)):
            self.stopped_by_request = True
            control.should_save = True
            control.should_training_stop = True
        if _any_rank(self.trigger.exists()):
            control.should_save = True
            self.saved_on_request = True
        return control

    def on_save(self, args, state, control, **kw):
        if self.is_main:
            # last, after the Trainer wrote every file of it: a checkpoint is resumed only whole
            write_manifest(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            if self.saved_on_request:
                with contextlib.suppress(FileNotFoundError):
                    self.trigger.unlink()
            self.run.set_status("running", last_checkpoint_step=state.global_step,
                                last_checkpoint=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))
        self.saved_on_request = False
        return control


def truncate_logs(run, upto_step: int) -> int:
    """Drop log lines after ``upto_step`` (steps that a resume will redo); returns lines kept."""
    from sarft_core.store import atomic_write_text
    import json

    rows = [r for r in run.logs() if r.get("step", 0) <= upto_step]
    atomic_write_text(run.log_path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    return len(rows)


MANIFEST = "manifest.json"


def write_manifest(checkpoint: Path) -> None:
    """Record what a checkpoint holds (every file and its size), written atomically after the
    rest: a checkpoint without it, or whose files no longer match it, is not resumed from."""
    from sarft_core.store import atomic_write_json

    files = {str(p.relative_to(checkpoint)): p.stat().st_size for p in sorted(checkpoint.rglob("*"))
             if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    atomic_write_json(checkpoint / MANIFEST, {"files": files})


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None: it is whole): no manifest (a crash while it
    was written, or a checkpoint of an older version), or a file it lists missing or resized."""
    from sarft_core.store import read_json_object

    manifest = read_json_object(checkpoint / MANIFEST, None)
    files = manifest.get("files") if manifest else None
    if not isinstance(files, dict) or not files:
        return "it has no manifest of its files (written last: the save did not finish)"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not the {size} it was saved with"
    if not _readable_json(checkpoint / "trainer_state.json"):
        return "trainer_state.json is not readable"
    return None


def _readable_json(path: Path) -> bool:
    """Whether ``path`` holds whole JSON: the Trainer writes trainer_state.json last, but not
    atomically, so a kill during that write leaves a checkpoint that must not be resumed from."""
    import json

    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Every ``checkpoint-N`` folder, newest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [(int(p.name.split("-", 1)[1]), p) for p in checkpoint_dir.glob("checkpoint-*")
             if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, reverse=True)


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest whole checkpoint (see :func:`checkpoint_problem`)."""
    return next((p for _, p in _checkpoints(checkpoint_dir) if checkpoint_problem(p) is None), None)


def resume_checkpoint(checkpoint_dir: Path, log=print) -> Path | None:
    """The checkpoint a resume continues from: the newest whole one, saying which newer ones were
    passed over and why (a partial one would resume with, e.g., a fresh optimizer, silently)."""
    for _, path in _checkpoints(checkpoint_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log(f"warning: {path.name} is incomplete ({problem}); not resuming from it")
    if checkpoint_dir.is_dir() and _checkpoints(checkpoint_dir):
        log("warning: no whole checkpoint is left: training restarts from the first step")
    return None
