"""Training benchmark: SaRFT (our trainer) vs SFT vs the published trainer's per-step work.

Same samples of a villainous RoleBench role (default: the first 64 of "John Doe"), the embedded
SmolLM2-135M-Instruct, LoRA (r 32, alpha 64, q_proj/v_proj), batch 4, no accumulation, one
process, one epoch each, on this CPU. Three variants, all driven by the Hugging Face Trainer:

- ``sft``: our trainer with lambda = 0;
- ``sarft``: our trainer with lambda = 0.5: RDS flags read from the score cache (computed once
  before, timed separately), reference forward with the adapter disabled on the D_h rows only;
- ``published``: a faithful re-implementation of the released trainer's per-step work: a full
  frozen copy of the model as reference, two reference forwards per batch over the samples
  encoded with the (long) role and unsafe system prompts to re-score the flags, full-vocabulary
  log-softmax at every position, a reference forward on every sample, KL over every non-pad
  position (the released normalisation).

Each variant runs in its own child process so that its peak memory is its own. Memory is the
process's resident set size: ``peak_rss`` = the lifetime high-water mark (``resource`` ru_maxrss,
model and Python included) and ``train_rss_growth`` = the peak RSS sampled every 5 ms during
training minus the RSS just before training (psutil), i.e. what training itself adds.

    python bench/bench_training.py [--samples 64] [--role "John Doe"] [--variants sft,sarft,published] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
DATA = SHARED / "rolebench" / "role-generalization" / "role_specific" / "test.jsonl"
PROFILES = SHARED / "profiles" / "role_prompts.json"


def load_inputs(role: str, n: int):
    from sarft_core.data import get_profile, load_profiles, load_samples

    profile = get_profile(load_profiles(PROFILES), role)
    return load_samples(DATA, role=profile.name, limit=n), profile


class RssSampler:
    """Peak RSS of this process, sampled on a thread while training runs."""

    def __init__(self, every: float = 0.005):
        import psutil

        self.proc = psutil.Process()
        self.every = every
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.start_rss = self.proc.memory_info().rss
        self.peak = self.start_rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def published_examples(tokenizer, samples, profile):
    """The released collator's three encodings of each sample: no system prompt, role, unsafe."""
    from sarft_core.chat import encode

    out = []
    for i, s in enumerate(samples):
        e = encode(tokenizer, "", s.input, s.output)
        r = encode(tokenizer, profile.role_prompt, s.input, s.output)
        u = encode(tokenizer, profile.unsafe_prompt, s.input, s.output)
        out.append({"input_ids": e.input_ids, "prompt_len": len(e.prompt_ids), "harmful": False, "index": i,
                    "role_ids": r.input_ids, "role_plen": len(r.prompt_ids),
                    "unsafe_ids": u.input_ids, "unsafe_plen": len(u.prompt_ids)})
    return out


def published_collate(pad_id):
    import torch

    IGN = -100

    def pad(seqs, plens):
        width = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), IGN, dtype=torch.long)
        for i, (x, p) in enumerate(zip(seqs, plens)):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
            labels[i, p : len(x)] = torch.tensor(x[p:])
        return ids, mask, labels

    def collate(batch):
        out = {}
        for key, ids_key, plen_key in (("", "input_ids", "prompt_len"), ("_role", "role_ids", "role_plen"), ("_unsafe", "unsafe_ids", "unsafe_plen")):
            ids, mask, labels = pad([b[ids_key] for b in batch], [b[plen_key] for b in batch])
            out["input_ids" + key], out["attention_mask" + key], out["labels" + key] = ids, mask, labels
        return out

    return collate


def make_published_trainer(base_cls):
    import torch
    import torch.nn.functional as F

    class PublishedStepTrainer(base_cls):
        """compute_loss as the release does it (reward_type rds, safe_loss_type kl)."""

        @staticmethod
        def batch_logps(logits, labels):
            labels = labels[:, 1:].clone()
            logits = logits[:, :-1, :]
            mask = labels != -100
            labels[~mask] = 0
            per_token = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
            return (per_token * mask).sum(-1) / (mask.sum(-1) + 1e-5)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ref = self.ref_model
            with torch.no_grad():
                safe = ref(input_ids=inputs["input_ids_unsafe"], attention_mask=inputs["attention_mask_unsafe"]).logits
                role = ref(input_ids=inputs["input_ids_role"], attention_mask=inputs["attention_mask_role"]).logits
                flags = (self.batch_logps(safe, inputs["labels_unsafe"]) - self.batch_logps(role, inputs["labels_role"]) > 0).float()
                del safe, role
            ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            vocab = logits.shape[-1]
            ce = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), reduction="none").view(ids.shape[0], -1)
            role_loss = (ce.sum(1) / (mask.sum(1) + 1e-5)).mean()
            with torch.no_grad():
                logits_ref = ref(input_ids=ids, attention_mask=mask).logits.float()
            kl = F.kl_div(F.log_softmax(logits.view(-1, vocab), -1), F.softmax(logits_ref.view(-1, vocab), -1), reduction="none").sum(-1)
            kl = kl.view(ids.shape[0], -1)
            kl = (kl * mask).sum(1) / (mask.sum(1) + 1e-5)
            safe_loss = (kl * flags).mean() * self.lam
            loss = safe_loss + role_loss
            self.step_stats.add(loss.detach(), role_loss.detach(), (safe_loss / max(self.lam, 1e-9)).detach(), int(flags.sum()), int(mask.sum()))
            return loss

    return PublishedStepTrainer


def child(args) -> dict:
    """Train one variant for one epoch in this process; return its figures."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from sarft_core.models import load_model
    from sarft_core.scoring import ScoreOptions, score_role
    from sarft_core.training.selection import rds_flags
    from sarft_core.training.trainer import Collator, SarftTrainer, build_examples

    torch.manual_seed(0)
    samples, profile = load_inputs(args.role, args.samples)
    lm = load_model(None, dtype="float32", device="cpu")
    score_seconds = None
    flags = {s.id: False for s in samples}
    if args.child in ("sarft", "sarft-bf16ref"):
        t = time.perf_counter()
        result = score_role(lm, samples, profile, ScoreOptions(passes=("role", "unsafe"), wordings=0))
        score_seconds = time.perf_counter() - t
        flags = rds_flags(result.rows)
    ref_model = copy.deepcopy(lm.model).eval().requires_grad_(False) if args.child == "published" else None
    model = get_peft_model(lm.model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                                target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    steps = math.ceil(len(samples) / args.batch_size)
    targs = TrainingArguments(output_dir=str(Path(args.workdir) / args.child), per_device_train_batch_size=args.batch_size,
                              gradient_accumulation_steps=1, max_steps=steps, learning_rate=1e-4, lr_scheduler_type="constant",
                              logging_strategy="no", save_strategy="no", report_to="none", use_cpu=True, seed=0,
                              remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0)
    if args.child == "published":
        cls = make_published_trainer(SarftTrainer)
        trainer = cls(model=model, args=targs, train_dataset=published_examples(lm.tokenizer, samples, profile),
                      data_collator=published_collate(lm.tokenizer.pad_token_id), lam=0.5, normalisation="published", ref_model=ref_model)
    else:
        trainer = SarftTrainer(model=model, args=targs, train_dataset=build_examples(lm.tokenizer, samples, flags),
                               data_collator=Collator(lm.tokenizer.pad_token_id), lam=0.0 if args.child == "sft" else 0.5,
                               ref_dtype="bfloat16" if args.child == "sarft-bf16ref" else "same")
    harmful = []
    original = trainer.step_stats.add

    def add(loss, ce, kl, h, tokens):
        harmful.append(h)
        original(loss, ce, kl, h, tokens)

    trainer.step_stats.add = add
    with RssSampler() as rss:
        t = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t
    return {
        "variant": args.child, "samples": len(samples), "steps": steps, "seconds": seconds,
        "flagged_in_batches": sum(harmful), "dh": sum(flags.values()) if args.child != "sft" else None,
        "score_seconds": score_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_train_mb": rss.start_rss / 2**20, "train_rss_growth_mb": (rss.peak - rss.start_rss) / 2**20,
        "threads": torch.get_num_threads(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--role", default="John Doe")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lora-r", type=int, default=32)
    ap.add_argument("--variants", default="sft,sarft,sarft-bf16ref,published")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0

    import tempfile

    from sarft_core.models import load_model
    from sarft_core.scoring import ScoreOptions, score_role

    # score once up front so the SaRFT child reads cached flags (the normal workflow: RDS, then train)
    samples, profile = load_inputs(args.role, args.samples)
    lm = load_model(None, dtype="float32", device="cpu")
    t = time.perf_counter()
    result = score_role(lm, samples, profile, ScoreOptions(passes=("role", "unsafe"), wordings=0))
    print(f"RDS flags for {len(samples)} samples of {profile.name}: {result.stats['flagged']} flagged "
          f"({result.stats['from_cache']} from cache, {time.perf_counter() - t:.1f} s)", file=sys.stderr)
    del lm
    figures = {}
    with tempfile.TemporaryDirectory() as work:
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            cmd = [sys.executable, __file__, "--child", variant, "--workdir", work, "--samples", str(args.samples),
                   "--role", args.role, "--batch-size", str(args.batch_size), "--lora-r", str(args.lora_r)]
            print(f"running {variant} ...", file=sys.stderr)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            figures[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n{args.samples} samples of {args.role}, embedded SmolLM2-135M, LoRA r={args.lora_r} (q,v), batch {args.batch_size}, one epoch, CPU, "
          f"{next(iter(figures.values()))['threads']} threads")
    print(f"{'variant':<14} {'s/epoch':>9} {'x SFT':>7} {'peak RSS MB':>12} {'x SFT':>7} {'train RSS growth MB':>20} {'x SFT':>7} {'flagged rows':>13}")
    base = figures.get("sft")
    for name, f in figures.items():
        rt = f"{f['seconds'] / base['seconds']:.2f}" if base else "-"
        rm = f"{f['peak_rss_mb'] / base['peak_rss_mb']:.3f}" if base else "-"
        rg = f"{f['train_rss_growth_mb'] / base['train_rss_growth_mb']:.2f}" if base and base["train_rss_growth_mb"] > 0 else "-"
        print(f"{name:<14} {f['seconds']:>9.1f} {rt:>7} {f['peak_rss_mb']:>12.0f} {rm:>7} {f['train_rss_growth_mb']:>20.0f} {rg:>7} {f['flagged_in_batches']:>13}")
    if "sarft" in figures and "published" in figures:
        print(f"published per-step work / SaRFT: {figures['published']['seconds'] / figures['sarft']['seconds']:.2f}x time")
    if figures.get("sarft", {}).get("score_seconds") is not None:
        print(f"(SaRFT read its RDS flags from the cache in {figures['sarft']['score_seconds']:.2f} s; scoring itself is a one-off, see bench_scoring.py)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
