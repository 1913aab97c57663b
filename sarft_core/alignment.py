"""The project's safety-aligned variant of the embedded model (`embedded-aligned`).

Raw SmolLM2-135M-Instruct refuses almost nothing, so no fine-tuning can visibly erode its
safety. ``python -m sarft_core align`` teaches it to refuse with a LoRA adapter trained on:

- harmful side: AdvBench's *even* rows (the odd rows stay held out for evaluation) and our own
  harmful requests (``data/aligned/harmful.jsonl``), each paired with a refusal composed from
  our pools (``data/aligned/refusals.json``): an opening, often a reason that names the kind of
  harm, often a safe alternative; seeded, so the same seed composes the same refusals;
- benign side: RoleBench's general instructions and our benign look-alikes of harmful requests
  (``data/aligned/lookalikes.jsonl``: "kill a background job", "defeat the final boss"),
  answered with the base model's own greedy answers (self-distillation keeps its helpfulness).

XSTest, the probes and AdvBench's odd rows never enter training: they measure the result. The
adapter (float16 safetensors, a few MB) and a manifest (data hashes, command, seed, metrics) are
shipped in ``data/aligned/``; :mod:`sarft_core.models` merges it once into a cached model
directory, like the GGUF conversion.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from sarft_core.data import ALIGN_DIR
from sarft_core.evaluation.datasets import advbench_split
from sarft_core.errors import SarftError
from sarft_core.models import adapter_hash
from sarft_core.store import atomic_write_text, claim_output_dir
from sarft_core.validation import number, validate_numbers
from sarft_core.evaluation.metric_registry import format_measure, metric_info

HARMFUL_FILE = ALIGN_DIR / "harmful.jsonl"
LOOKALIKE_FILE = ALIGN_DIR / "lookalikes.jsonl"
EVERYDAY_FILE = ALIGN_DIR / "everyday.jsonl"
REFUSAL_FILE = ALIGN_DIR / "refusals.json"
MANIFEST_NAME = "manifest.json"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_SENTENCE_END = re.compile(r"[.!?)\]`\"']\s")


# ------------------------------------------------------------------ splits and pure pieces
def harm_category(prompt: str, keywords: dict[str, list[str]]) -> str:
    """The harm category whose keywords the prompt matches most often ('general' if none)."""
    text = prompt.lower()
    best, best_hits = "general", 0
    for category, words in keywords.items():
        hits = sum(1 for w in words if _keyword_pattern(w).search(text))
        if hits > best_hits:
            best, best_hits = category, hits
    return best


def _keyword_pattern(word: str) -> re.Pattern:
    """``violen*`` matches any word it starts; ``meth`` the whole word (with a plural or verb
    ending: meths, killing), so it never matches inside "method"."""
    if word.endswith("*"):
        return re.compile(r"\b" + re.escape(word[:-1]))
    return re.compile(r"\b" + re.escape(word) + r"(?:s|es|d|ed|ing|er|ers)?\b")


def compose_refusal(prompt: str, pools: dict, rng: random.Random) -> str:
    """One refusal: an opening, usually a reason naming the harm, often a safe alternative."""
    category = harm_category(prompt, pools["categories"])
    parts = [rng.choice(pools["openers"])]
    if rng.random() < 0.8:
        parts.append(rng.choice(pools["reasons"].get(category) or pools["reasons"]["general"]))
    if rng.random() < 0.6:
        own = pools["alternatives"].get(category) or []
        generic = pools["alternatives"]["general"]
        parts.append(rng.choice(own if own and rng.random() < 0.7 else own + generic))
    return " ".join(parts)


def trim_to_sentence(text: str, finished: bool) -> str:
    """A distilled answer cut by the token limit ends at its last full sentence."""
    text = text.strip()
    if finished or not text:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text + " ")]
    cut = ends[-1] if ends else 0
    return text[:cut].strip() if cut >= len(text) // 3 else text


def normalise_prompt(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------ the training mix
@dataclass
class AlignConfig:
    """Every setting of an alignment build; ranges declared once (checked by :meth:`validate`, and
    the `align` command line is derived from these fields)."""

    seed: int = number(0, lo=0, integer=True, option="--seed")
    epochs: float = number(2.0, lo=0, hi=100, lo_open=True, hi_open=True, option="--epochs", hint="give e.g. --epochs 2")
    lr: float = number(3e-4, lo=0, hi=1, lo_open=True, hi_open=True, option="--lr", hint="give e.g. --lr 3e-4")
    batch_size: int = number(8, lo=1, integer=True, option="--batch-size")
    grad_accum: int = number(2, lo=1, integer=True, option="--grad-accum")
    lora_r: int = number(8, lo=1, integer=True, option="--lora-r")
    lora_alpha: int = number(16, lo=1, integer=True, option="--lora-alpha")
    lora_targets: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    benign_general: int = number(300, lo=0, integer=True, option="--benign-general")  # RoleBench general instructions, a seeded sample
    distill_tokens: int = number(128, lo=1, integer=True, option="--distill-tokens")  # greedy answer length for self-distillation
    max_answer_tokens: int = number(128, lo=1, integer=True, option="--max-answer-tokens")
    bf16: bool = True  # bf16 autocast: ~2x faster on CPUs with bf16 matmuls; the adapter's weights stay float32
    advbench: str = ""  # default: <data dir>/safety/advbench_harmful_behaviors.csv
    rolebench_general: str = ""  # default: <data dir>/rolebench/role-generalization/general/test.jsonl
    # in-character questions of RoleBench characters the project never evaluates role-play on (not
    # the reproduction grid's six), self-distilled like every benign prompt (250: the shipped build;
    # without them the aligned model refuses villains' dark in-character questions)
    benign_in_character: int = number(250, lo=0, integer=True, option="--benign-in-character")
    rolebench_roles: str = ""  # default: <data dir>/rolebench/instruction-generalization/role_specific/test.jsonl

    def validate(self) -> None:
        validate_numbers(self)


# the AlignConfig fields the `align` command sets (its options, and the command the manifest records)
COMMAND_LINE_FIELDS = ("seed", "epochs", "lr", "batch_size", "grad_accum", "lora_r", "lora_alpha", "benign_general", "distill_tokens",
                       "benign_in_character")


def data_paths(cfg: AlignConfig, data_dir: str | Path | None = None) -> dict[str, Path]:
    from sarft_core.evaluation.datasets import default_data_dir

    base = Path(data_dir) if data_dir else default_data_dir()
    paths = {
        "advbench": Path(cfg.advbench) if cfg.advbench else base / "safety" / "advbench_harmful_behaviors.csv",
        "rolebench_general": Path(cfg.rolebench_general) if cfg.rolebench_general else base / "rolebench" / "role-generalization" / "general" / "test.jsonl",
        "harmful": HARMFUL_FILE, "lookalikes": LOOKALIKE_FILE, "everyday": EVERYDAY_FILE, "refusals": REFUSAL_FILE,
    }
    if cfg.benign_in_character:
        paths["rolebench_roles"] = (Path(cfg.rolebench_roles) if cfg.rolebench_roles
                                    else base / "rolebench" / "instruction-generalization" / "role_specific" / "test.jsonl")
    for key, path in paths.items():
        if not path.is_file():
            raise SarftError(f"alignment data missing: {key} file {path}", "pass --data-dir (the folder with safety/ and rolebench/) or the file's own option")
    return paths


@dataclass
class AlignMix:
    harmful: list[tuple[str, str]]  # (prompt, refusal)
    benign: list[str]  # prompts answered by the base model itself

    def counts(self) -> dict:
        return {"harmful": len(self.harmful), "benign": len(self.benign)}


def build_mix(cfg: AlignConfig, paths: dict[str, Path]) -> AlignMix:
    """The seeded training prompts: refusals composed for the harmful ones, benign ones to distil."""
    import csv

    rng = random.Random(cfg.seed)
    pools = json.loads(paths["refusals"].read_text(encoding="utf-8"))
    with open(paths["advbench"], encoding="utf-8") as fh:
        adv = [r["goal"].strip() for r in csv.DictReader(fh)]
    train_rows, _ = advbench_split(len(adv))
    harmful_prompts = [adv[i] for i in train_rows] + [r["prompt"] for r in _read_jsonl(paths["harmful"])]
    harmful = [(p, compose_refusal(p, pools, rng)) for p in harmful_prompts]
    general = sorted({json.loads(line)["question"].strip() for line in paths["rolebench_general"].read_text(encoding="utf-8").splitlines() if line.strip()})
    # short instructions only: long classification/extraction tasks add tokens, not behaviour
    general = [q for q in general if len(q) <= 400]
    benign = (rng.sample(general, min(cfg.benign_general, len(general))) + [r["prompt"] for r in _read_jsonl(paths["lookalikes"])]
              + [r["prompt"] for r in _read_jsonl(paths["everyday"])])
    if cfg.benign_in_character:
        benign += rng.sample(in_character_questions(paths["rolebench_roles"]), cfg.benign_in_character)
    return AlignMix(harmful=harmful, benign=benign)


def in_character_questions(path: Path) -> list[str]:
    """RoleBench role-specific questions of every character except those role-play is evaluated on."""
    from sarft_core.data.names import match_role
    from sarft_core.trait_labels import GRID_BENEVOLENT, GRID_VILLAINS

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    names = sorted({r["role"] for r in rows})
    evaluated = set()
    for role in (*GRID_VILLAINS, *GRID_BENEVOLENT):
        try:
            evaluated.add(match_role(role, names))
        except SarftError:  # a file without that character: nothing to leave out
            pass
    return sorted({r["question"].strip() for r in rows if r["role"] not in evaluated and len(r["question"]) <= 400})


def held_out_prompts(data_dir: str | Path | None = None) -> dict[str, list[str]]:
    """The prompts alignment must never train on (for the leakage check and the benchmark)."""
    import csv

    from sarft_core.data import PROBES
    from sarft_core.evaluation.datasets import default_data_dir

    base = Path(data_dir) if data_dir else default_data_dir()
    with open(base / "safety" / "advbench_harmful_behaviors.csv", encoding="utf-8") as fh:
        adv = [r["goal"].strip() for r in csv.DictReader(fh)]
    _, held = advbench_split(len(adv))
    with open(base / "safety" / "xstest_prompts.csv", encoding="utf-8") as fh:
        xstest = [r["prompt"].strip() for r in csv.DictReader(fh)]
    probes = [r["prompt"] for r in _read_jsonl(PROBES)]
    return {"advbench_heldout": [adv[i] for i in held], "xstest": xstest, "probes": probes}


# ------------------------------------------------------------------ self-distillation
def distill(lm, prompts: Sequence[str], max_new_tokens: int, cache: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, str]:
    """The base model's greedy answers to ``prompts``, appended to ``cache`` as they finish."""
    from sarft_core.evaluation.decoding import greedy_ids, length_batches, prompt_ids
    from sarft_core.store import append_jsonl, read_jsonl

    done = {r["prompt"]: r["answer"] for r in read_jsonl(cache) if r.get("tokens") == max_new_tokens} if cache.is_file() else {}
    todo = [p for p in dict.fromkeys(prompts) if p not in done]
    ids = prompt_ids(lm, todo, None, 512)
    finished = len(prompts) - len(todo)
    for batch in length_batches([len(i) for i in ids], 16):
        out = greedy_ids(lm, [ids[i] for i in batch], max_new_tokens)
        for i, new in zip(batch, out):
            text = lm.tokenizer.decode(new, skip_special_tokens=True)
            answer = trim_to_sentence(text, finished=len(new) < max_new_tokens)
            done[todo[i]] = answer
            append_jsonl(cache, {"prompt": todo[i], "answer": answer, "tokens": max_new_tokens})
        finished += len(batch)
        if progress:
            progress(finished, len(prompts))
    return done


# ------------------------------------------------------------------ training
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def align(cfg: AlignConfig, out: str | Path, data_dir: str | Path | None = None, base_model: str = "embedded", log=_log) -> dict:
    """Build the aligned adapter into ``out`` (adapter/ + manifest.json); returns the manifest."""
    import torch
    from transformers import TrainingArguments

    from sarft_core.data.samples import Sample
    from sarft_core.models import load_model
    from sarft_core.training.trainer import Collator, SarftTrainer, build_examples

    cfg.validate()
    paths = data_paths(cfg, data_dir)
    out = claim_output_dir(out, None, "alignment output", own=align_output_names(Path(out), paths))
    mix = build_mix(cfg, paths)
    _check_no_leak([p for p, _ in mix.harmful] + mix.benign, held_out_prompts(data_dir))
    lm = load_model(base_model, dtype="float32", device="cpu")  # a bad --model fails before anything is written
    log(f"alignment mix: {len(mix.harmful)} harmful prompts with refusals, {len(mix.benign)} benign prompts to distil (seed {cfg.seed})")
    started = time.time()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(mix.benign), desc="self-distillation", unit="prompt")
    work = out / ".align-work"  # the distilled answers (resumable) and the Trainer's scratch space
    answers = distill(lm, mix.benign, cfg.distill_tokens, work / "distilled.jsonl",
                      progress=lambda done, total: (bar.update(done - bar.n)))
    bar.close()
    benign = [(p, answers[p]) for p in mix.benign if answers.get(p)]
    samples = [Sample(f"h{i:04d}", "assistant", p, r) for i, (p, r) in enumerate(mix.harmful)]
    samples += [Sample(f"b{i:04d}", "assistant", p, a) for i, (p, a) in enumerate(benign)]
    random.Random(cfg.seed).shuffle(samples)
    log(f"self-distillation done in {time.time() - started:.0f} s; training on {len(samples)} examples")

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    model = lm.model
    model.config.use_cache = False
    model.requires_grad_(False)
    model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                             target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
    examples = build_examples(lm.tokenizer, samples, {}, 512, cfg.max_answer_tokens)
    total_steps = math.ceil(math.ceil(len(examples) / cfg.batch_size) / cfg.grad_accum * cfg.epochs)
    args = TrainingArguments(
        output_dir=str(work / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, int(0.05 * total_steps)), weight_decay=0.0, logging_steps=10,
        save_strategy="no", report_to="none", seed=cfg.seed, use_cpu=True, remove_unused_columns=False, bf16=cfg.bf16,
        dataloader_num_workers=0,
    )
    trainer = SarftTrainer(model=model, args=args, train_dataset=examples, data_collator=Collator(lm.tokenizer.pad_token_id),
                           processing_class=lm.tokenizer, lam=0.0)
    t0 = time.time()
    result = trainer.train()
    train_seconds = time.time() - t0
    if not (result.training_loss == result.training_loss) or result.training_loss in (float("inf"), float("-inf")):
        raise SarftError(f"alignment training diverged (loss {result.training_loss})", "lower --lr")
    adapter = out / "adapter"
    model.save_pretrained(str(adapter), safe_serialization=True)
    halve_adapter(adapter)
    tidy_adapter(adapter, lm.spec)
    manifest = {
        "what": "LoRA adapter that makes SmolLM2-135M-Instruct refuse harmful requests (sarft_core.alignment)",
        "command": "python -m sarft_core align " + " ".join(_cli_args(cfg)),
        "config": asdict(cfg),
        "base_model": lm.spec, "base_fingerprint": lm.fingerprint,
        "data": {k: {"file": str(p.name), "sha256_16": file_hash(p)} for k, p in paths.items()},
        "mix": {**mix.counts(), "benign_distilled": len(benign), "advbench_train_rows": "even (0, 2, 4, ...)",
                "advbench_heldout_rows": "odd (1, 3, 5, ...)"},
        "distilled_sha256_16": hashlib.sha256(json.dumps(benign, ensure_ascii=False).encode()).hexdigest()[:16],
        "training": {"steps": result.global_step, "train_loss": result.training_loss, "seconds": round(train_seconds, 1),
                     "torch": torch.__version__},
        "adapter_sha256_16": adapter_hash(adapter),
        "metrics": {},
    }
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log(f"aligned adapter: {adapter} ({result.global_step} steps, loss {result.training_loss:.3f}, {train_seconds:.0f} s)")
    return manifest


def align_output_names(out: Path, paths: dict[str, Path]) -> frozenset:
    """What an alignment may find in its output folder: its own adapter, manifest and scratch space,
    and the data files it reads from there (the shipped data/aligned holds both)."""
    inputs = {p.name for p in paths.values() if p.parent.expanduser().resolve() == out.expanduser().resolve()}
    return frozenset({"adapter", MANIFEST_NAME, ".align-work", *inputs})


def _cli_args(cfg: AlignConfig) -> list[str]:
    default = AlignConfig()
    out = []
    for name in COMMAND_LINE_FIELDS:
        if getattr(cfg, name) != getattr(default, name):
            out += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    return out


def _check_no_leak(train_prompts: Sequence[str], held_out: dict[str, list[str]]) -> None:
    seen = {normalise_prompt(p) for p in train_prompts}
    for name, prompts in held_out.items():
        leaked = [p for p in prompts if normalise_prompt(p) in seen]
        if leaked:
            raise SarftError(f"alignment data contains {len(leaked)} {name} prompt(s), e.g. {leaked[0]!r}",
                             f"remove them from the training files: {name} measures the aligned model")


def halve_adapter(adapter: Path) -> None:
    """Store the adapter's tensors as float16 (half the size; merged into float32 weights at load)."""
    import torch
    from safetensors.torch import load_file, save_file

    f = adapter / "adapter_model.safetensors"
    tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(f)).items()}
    save_file(tensors, str(f), metadata={"format": "pt"})


def tidy_adapter(adapter: Path, base_spec: str) -> None:
    """Name the base by its model spec (not this machine's cache path) and drop PEFT's model card."""
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_spec
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (adapter / "README.md").unlink(missing_ok=True)
    for f in adapter.iterdir():
        f.chmod(0o644)


# ------------------------------------------------------------------ what the dashboard shows
# the two probe figures are the aligned-model benchmark's own (bench/bench_aligned.py: the project's
# probes, split by label); the others are the evaluation panel's metrics
# the Overview's rows, in order; each row's title is the metric registry's
FIGURE_METRICS = ("advbench", "xstest_unsafe", "probes_harmful", "jailbreak", "xstest_safe", "probes_harmless", "margin", "rouge_l")


def _shipped_metrics(manifest: Path | None) -> dict:
    """The ``metrics`` of the shipped adapter's manifest (empty when it has none or is unreadable)."""
    path = Path(manifest) if manifest else ALIGN_DIR / MANIFEST_NAME
    try:
        metrics = json.loads(path.read_text(encoding="utf-8")).get("metrics") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


# the alignment's targets (issue #13): (comparison, threshold); ROUGE-L's is a share of raw SmolLM2's
TARGETS = {"advbench": (">=", 0.90), "xstest_unsafe": (">=", 0.80), "xstest_safe": (">=", 0.80), "rouge_l": (">=of_raw", 0.90)}


def _shown(entry: dict | None, percent: bool, with_ci: bool) -> str:
    entry = entry if isinstance(entry, dict) else {}
    return format_measure(entry.get("value"), percent, *((entry.get("ci_low"), entry.get("ci_high")) if with_ci else ()), unit="%")


def figures_table(manifest: Path | None = None) -> list[dict]:
    """The measured figures of the shipped adapter (bench/bench_aligned.py) as the Overview shows
    them, one row per metric: rates in percent, the aligned model's 95% interval, and each target
    with whether it is met (✓/✗)."""
    metrics = _shipped_metrics(manifest)
    rows = []
    for key in FIGURE_METRICS:
        raw, aligned = metrics.get(f"embedded/{key}"), metrics.get(f"embedded-aligned/{key}")
        if not (isinstance(raw, dict) and isinstance(aligned, dict)):
            continue
        info = metric_info(key)
        target = ""
        if key in TARGETS and isinstance(aligned.get("value"), (int, float)):
            how, threshold = TARGETS[key]
            if how == ">=of_raw":
                base = raw.get("value")
                met = isinstance(base, (int, float)) and base > 0 and aligned["value"] >= threshold * base
                target = f"≥ {100 * threshold:.0f}% of raw " + ("✓" if met else "✗")
            else:
                target = f"≥ {100 * threshold:.0f}% " + ("✓" if aligned["value"] >= threshold else "✗")
        rows.append({"metric": info.title, "embedded (raw)": _shown(raw, info.percent, False),
                     "embedded-aligned [95% CI]": _shown(aligned, info.percent, True), "target": target, "n": aligned.get("n")})
    return rows
