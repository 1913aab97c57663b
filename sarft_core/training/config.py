"""A training run's options (:class:`TrainConfig`) and their one validation, with the views of the
method registry they check against: everything about a run that is known before it loads a model.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from sarft_core.errors import SarftError
from sarft_core.training.losses import KL_DIRECTIONS, LOSS_NORMALISATIONS
from sarft_core.training import selection
from sarft_core.training.methods import drop_methods, get_method, kl_methods, method_names
from sarft_core.validation import choice, number, validate_choices, validate_numbers

# views of the method registry (sarft_core.training.methods: one file per method)
METHODS = method_names()
KL_METHODS = kl_methods()
DROP_METHODS = drop_methods()
RANKINGS = ("margin", "influence")  # what --dh-fraction and --train-subset rank by
AUTOCAST = ("auto", "bf16", "off")
PEFT_KINDS = ("lora", "full")
REF_DTYPES = ("same", "bfloat16")  # the reference forward: the policy's own precision, or bf16 autocast
BASELINE_USES = ("drop", "kl")  # seal / biselect: drop the selected samples, or use them as D_h
# the order of the training samples: shuffled (published), or shuffled batches of similar length
# (less padding: fewer FLOPs for the same samples)
SAMPLING = ("random", "group_by_length")
# attention kernel while training: "auto" = eager on the CPU (torch's CPU flash-attention backward
# measured 13-16% slower per step than eager on 130-token sequences), sdpa elsewhere; same math
ATTENTION = ("auto", "eager", "sdpa")
# --report-to: the experiment tracker Transformers' Trainer logs to, and the package each needs
REPORT_TO = {"none": (), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}
DEFAULT_LR = {"lora": 1e-4, "full": 2e-5}


def check_report_to(value: str) -> None:
    """``--report-to``: a known tracker whose package is installed (one clear error otherwise)."""
    if value not in REPORT_TO:
        raise SarftError(f"unknown --report-to {value!r}", f"use one of {', '.join(REPORT_TO)}")
    packages = REPORT_TO[value]
    if packages and not any(importlib.util.find_spec(p) is not None for p in packages):
        raise SarftError(f"--report-to {value} needs the {packages[0]} package, which is not installed",
                         f"pip install {packages[0]} (or use --report-to none)")


@dataclass
class TrainConfig:
    """Every option of one training run; numeric ranges and the allowed values of text options are
    declared here, checked by validate() and read by the ``train`` command line."""

    method: str = choice("sarft", METHODS)
    role: str = ""
    data: str | None = None
    profiles: str | None = None
    columns: dict | None = None
    answer_index: int = number(0, lo=0, integer=True, option="--answer-index")
    limit: int | None = number(None, lo=1, integer=True, optional=True, option="--limit")
    model: str = ""
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    peft: str = choice("lora", PEFT_KINDS)
    lam: float = number(0.5, lo=0, hi=1e6, option="--lambda", hint="give --lambda 0.5 (published example) or 0 for plain SFT")
    kl_direction: str = choice("ref||theta", KL_DIRECTIONS)
    ref_dtype: str = choice("same", REF_DTYPES)
    # "auto": bf16 mixed precision on a CUDA GPU that has it; "bf16": on the CPU too (about 2x on
    # CPUs with bf16 matmuls, the published setup trained in bf16); "off": the model's own dtype
    autocast: str = choice("auto", AUTOCAST)
    normalisation: str = choice("answer", LOSS_NORMALISATIONS)
    sampling: str = choice("random", SAMPLING)
    attention: str = choice("auto", ATTENTION)
    tau: float = number(0.0, lo=-1e6, hi=1e6, option="--tau", hint="give a threshold on s_unsafe - s_role, e.g. --tau 0 (published)")
    overrides: str | None = None
    # the selection experiment (docs/reproduce.md): a D_h of exactly ceil(F * n) samples for the KL
    # methods, and/or training on only one end of the ranking; the ranking is RDS's margin or the
    # measured erosion of refusal (score --validate's influence)
    dh_fraction: float | None = number(None, lo=0, hi=1, lo_open=True, optional=True, option="--dh-fraction",
                                       hint="give a fraction of the samples such as 0.3, or leave it out for RDS's flags (margin > tau)")
    train_subset: str = choice("all", ("all",) + selection.SUBSETS, option="--train-subset")
    subset_fraction: float = number(0.3, lo=0, hi=1, lo_open=True, option="--subset-fraction")
    rank_by: str = choice("margin", RANKINGS, option="--rank-by")
    seed: int = number(0, lo=0, hi=2**32 - 1, integer=True, option="--seed")
    epochs: float = number(1.0, lo=0, lo_open=True, hi=10_000, option="--epochs", hint="give e.g. --epochs 1 (published)")
    lr: float | None = number(None, lo=0, lo_open=True, hi=1.0, optional=True, option="--lr",
                              hint="give e.g. --lr 1e-4 (LoRA) or 2e-5 (published, full fine-tuning), or leave it out")
    batch_size: int = number(4, lo=1, hi=1_000_000, integer=True, option="--batch-size")
    grad_accum: int = number(8, lo=1, hi=1_000_000, integer=True, option="--grad-accum")
    max_steps: int = number(-1, lo=1, integer=True, extra=(-1,), option="--max-steps", hint="give a positive number, or leave it out to train for --epochs")
    save_steps: int = number(50, lo=1, integer=True, option="--save-steps")
    lora_r: int = number(32, lo=1, hi=65_536, integer=True, option="--lora-r")
    lora_alpha: float = number(64, lo=0, lo_open=True, hi=1e6, option="--lora-alpha")
    lora_dropout: float = number(0.0, lo=0, hi=1, hi_open=True, option="--lora-dropout", hint="give e.g. --lora-dropout 0.05, or 0 (the default)")
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    freeze_layers: str | None = None  # sppft: explicit inclusive range, e.g. "6-12"
    drop_fraction: float = number(0.2, lo=0, hi=1, hi_open=True, option="--drop-fraction", hint="give e.g. --drop-fraction 0.2")
    baseline_use: str = choice("drop", BASELINE_USES)
    report_to: str = choice("none", REPORT_TO)  # the Trainer's tracker integration; none by default
    max_prompt_tokens: int = number(512, lo=1, hi=1_000_000, integer=True, option="max_prompt_tokens")
    max_answer_tokens: int = number(128, lo=1, hi=1_000_000, integer=True, option="max_answer_tokens")

    @property
    def effective_lambda(self) -> float:
        method = get_method(self.method)
        if method.dh is not None or (method.drop is not None and self.baseline_use == "kl"):
            return self.lam
        return 0.0

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.peft]

    def validate(self) -> None:
        for name in ("method", "role", "model", "dtype", "device", "peft", "kl_direction", "ref_dtype", "autocast", "normalisation", "sampling", "attention", "baseline_use", "report_to"):
            if not isinstance(getattr(self, name), str):
                raise SarftError(f"training option {name} must be text, got {getattr(self, name)!r}", "fix the option (or the run's config.json)")
        for name in ("data", "profiles", "overrides", "freeze_layers"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise SarftError(f"training option {name} must be text, got {getattr(self, name)!r}", "fix the option (or the run's config.json)")
        if not isinstance(self.lora_targets, list) or not all(isinstance(t, str) and t for t in self.lora_targets):
            raise SarftError(f"--lora-targets must be module names, got {self.lora_targets!r}", "give e.g. --lora-targets q_proj,v_proj")
        if self.columns is not None and not (isinstance(self.columns, dict) and all(isinstance(v, str) for v in self.columns.values())):
            raise SarftError(f"--columns must map fields to column names, got {self.columns!r}", "write --columns input=COL,output=COL")
        validate_numbers(self)
        from sarft_core.models import check_device

        check_device(self.device)
        validate_choices(self)  # method, peft, kl_direction, ref_dtype, autocast, ... (their declarations above)
        check_report_to(self.report_to)
        self._check_selection()
        if not self.role:
            raise SarftError("no --role given", "name the character to train, e.g. --role \"John Doe\"")
        self._validate_files_and_layers()

    def _validate_files_and_layers(self) -> None:
        """The options that name a file or a layer range: checked with the others, before a run
        directory exists (a refusal after it would leave a run that blocks the corrected command)."""
        if self.overrides is not None:
            if self.method not in KL_METHODS:
                raise SarftError(f"--overrides is used by {', '.join(KL_METHODS)} only (it edits which samples are in D_h); "
                                 f"--method {self.method} has no D_h, so the file would be ignored",
                                 "drop --overrides, or train with --method sarft")
            if not Path(self.overrides).is_file():
                raise SarftError(f"overrides file does not exist: {self.overrides}", "check the path given to --overrides")
        if self.freeze_layers is not None:
            from sarft_core.training.sppft import layer_range_form

            if self.method != "sppft":
                raise SarftError(f"--freeze-layers is used by sppft only; --method {self.method} would ignore it",
                                 "drop --freeze-layers, or train with --method sppft")
            layer_range_form(self.freeze_layers)  # its form now; the model's depth in check_model_depth

    def _check_selection(self) -> None:
        """Selection options that would have no effect, or fight another option, are refused."""
        if self.dh_fraction is not None and self.method not in KL_METHODS:
            raise SarftError(f"--dh-fraction sizes D_h, which method {self.method} does not use",
                             f"use it with one of {', '.join(KL_METHODS)}, or leave it out")
        if self.dh_fraction is not None and self.overrides:
            raise SarftError("--overrides and --dh-fraction both choose D_h", "give one of them")
        if self.train_subset != "all" and self.method in DROP_METHODS:
            raise SarftError(f"--train-subset and method {self.method} both choose the training samples", "give one of them")
        if self.rank_by != "margin" and self.dh_fraction is None and self.train_subset in ("all", "random"):
            raise SarftError(f"--rank-by {self.rank_by} ranks samples for --dh-fraction or --train-subset top/bottom, and neither is given",
                             "add --dh-fraction F or --train-subset top|bottom, or leave --rank-by out")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        if not isinstance(data, dict):
            raise SarftError("the run's stored training options are damaged (not a JSON object)",
                             "start a new run with another --out (the damaged run cannot be resumed)")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def planned_steps(samples: int, cfg: TrainConfig, world_size: int = 1) -> int:
    """The optimizer steps a run of ``samples`` samples will take, as the Hugging Face Trainer counts
    them: ``--max-steps`` when given, else whole micro-batches per process per epoch, grouped by the
    accumulation, over the epochs."""
    import math

    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = max(math.ceil(samples / (cfg.batch_size * max(world_size, 1))) // cfg.grad_accum, 1)
    return math.ceil(cfg.epochs * per_epoch)
