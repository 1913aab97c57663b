"""RDS scoring's options, result type and plans (how the first pass runs: exact, the bf16
screen with its fp32 re-check, or vLLM)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from sarft_core.backends import backend_names, check_backend
from sarft_core.chat import MAX_ANSWER_TOKENS, MAX_PROMPT_TOKENS
from sarft_core.data.profiles import UNSAFE_INSTRUCTION_VARIANTS
from sarft_core.models import LoadedModel
from sarft_core.scoring.machine import MachineDecision, machine_decision
# the passes and their names live in scoring.passes (the cache reads them without this module)
from sarft_core.scoring.passes import (  # noqa: F401 (re-exported: the scoring options' API)
    FLAG_PASSES, PASSES, REF_SYSTEM_PROMPT, WORDING_PREFIX, is_pass_name, wording_passes,
)
from sarft_core.validation import choice, number, validate_choices, validate_numbers

SCORE_COLUMNS = [
    "id", "role", "input", "output", "logp_ref", "logp_role", "logp_unsafe",
    "s_role", "s_unsafe", "harmful", "n_tokens", "margin_se", "verdict",
]
DEFAULT_WORDINGS = 3  # rewordings scored by default (bench/bench_flag_uncertainty.py chose the ensemble)
LOGP_REDUCTIONS = ("mean", "sum")  # per-token mean of the answer's log-probs (as published), or their sum
# The fast mode is the fastest way to the exact flags. Where bfloat16 pays, it scores first at
# reduced precision, then re-scores in IEEE float32 the flag passes (role, unsafe) of every
# sample whose flag margin |s_unsafe - s_role| lies within a band around the boundary, so that
# its flag is the exact one (the reference pass, which no flag depends on, is not re-scored):
# - any model on a GPU, or one the packed forward does not cover: a bfloat16 copy of the whole
#   model; its margins differ by up to ~0.04 (114 RoleBench samples of two roles), hence a band
#   of 0.04;
# - Llama-family models on the CPU run the packed forward. Its bfloat16 screen (bf16 weights and
#   matmul inputs; float32 residual, norms, attention) moved margins by up to 0.018 on 672
#   samples of six RoleBench roles, hence a band of 0.03, which sends 31-80% of a role's
#   samples back to float32. Whether the screen pays depends on the machine's bf16 speed-up
#   (about 1.9x on an EPYC with avx512_bf16, where the screen measured 0.95-1.45x the exact
#   time in all; about 6.8x with AMX): :mod:`sarft_core.scoring.machine` decides, once per CPU
#   model and torch version, and a role whose re-check share would make the screen slower than
#   scoring exactly finishes on the exact path. An explicit ``recheck_band`` asks for the
#   screen whatever the machine.
PACKED_BF16_RECHECK_BAND = 0.03
BF16_RECHECK_BAND = 0.04
# an automatically chosen screen first scores this many samples, so that a role whose re-check
# share makes it slower than the exact path is caught early
SCREEN_PROBE_SAMPLES = 16


@dataclass
class ScoreOptions:
    passes: tuple[str, ...] = PASSES
    normalise: str = choice("mean", LOGP_REDUCTIONS)
    max_prompt_tokens: int = number(MAX_PROMPT_TOKENS, lo=1, integer=True, option="--max-prompt-tokens")
    max_answer_tokens: int = number(MAX_ANSWER_TOKENS, lo=1, integer=True, option="--max-answer-tokens")
    # None: 1024 on the CPU, 16384 on a GPU
    max_batch_tokens: int | None = number(None, lo=1, integer=True, optional=True, option="--batch-tokens",
                                          hint="give --batch-tokens an integer of at least 1, or leave it out for the device's default")
    fast: bool = False  # the fastest path to the exact flags (fast_plan): a bf16 screen + fp32 re-check, or the exact path
    # None: the band measured for the fast path in use
    recheck_band: float | None = number(None, lo=0, optional=True, option="--recheck-band",
                                        hint="give a band in [0, inf): 0 re-checks nothing, 0.03 is the measured safe band of the CPU screen; or leave it out")
    # samples planned (sorted into batches) together; each is cached as soon as it is finished
    chunk_size: int = number(64, lo=1, integer=True, option="chunk_size")
    backend: str = choice("torch", backend_names(), option="backend")  # a registered backend (sarft_core.backends): torch, or vllm where installed
    tensor_parallel: int = number(1, lo=1, integer=True, option="--tensor-parallel",
                                  hint="give the number of GPUs per model, e.g. 1")  # vLLM only: GPUs per model
    # how sure each flag is: the margin under this many rewordings of the unsafe instruction besides
    # the published one (sarft_core.data.profiles.UNSAFE_INSTRUCTION_VARIANTS); margin_se is their
    # spread. 0: the block bootstrap over the answer's tokens instead (free, but measured less
    # reliable: docs/flags.md). Each wording is one more pass over the answers.
    wordings: int = number(DEFAULT_WORDINGS, lo=0, hi=len(UNSAFE_INSTRUCTION_VARIANTS), integer=True, option="--wordings")

    def validate(self) -> None:
        from sarft_core.errors import SarftError

        validate_choices(self)  # normalise, backend
        bad = [p for p in self.passes if p not in PASSES]
        if bad or not set(FLAG_PASSES) <= set(self.passes):
            raise SarftError(f"passes must include role and unsafe (got {self.passes})", "use ref,role,unsafe or role,unsafe")
        validate_numbers(self)  # token limits, batch tokens, chunk size, re-check band, tensor parallel
        check_backend(self.backend)
        if self.backend == "vllm" and (self.fast or self.recheck_band is not None):
            raise SarftError("fast mode and --recheck-band are this engine's, not vLLM's",
                             "with --backend vllm give the precision with --dtype (bfloat16: approximate flags), or use --backend torch")
        if self.recheck_band is not None and not self.fast:
            # the band only shapes the fast mode's bf16 screen: the exact path would ignore it
            raise SarftError(f"--recheck-band {self.recheck_band} applies only to the fast mode, and this run scores exactly in float32",
                             "add --dtype bfloat16 for the fast mode (a bf16 screen, then float32 for samples within the band), "
                             "or leave --recheck-band out")


@dataclass
class ScoreResult:
    rows: list[dict]
    token_logps: dict[str, dict[str, list[float]]]  # sample id -> pass -> per-token log-probs
    answer_ids: dict[str, list[int]]
    stats: dict = field(default_factory=dict)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=SCORE_COLUMNS)

    def token_ratios(self, sample_id: str) -> list[float]:
        """Per-token log p_unsafe - log p_role of one answer: which words make it harmful."""
        t = self.token_logps[sample_id]
        return [u - r for u, r in zip(t["unsafe"], t["role"])]



@dataclass(frozen=True)
class FastPlan:
    """How the first scoring pass runs: the packed precision, the re-check band, and whether it
    uses a bfloat16 copy of the model (made only when scoring, never for a cache lookup).
    ``auto``: chosen by the machine (:mod:`sarft_core.scoring.machine`), so a run may leave it
    for the exact path when its re-check share makes it slower; ``screen_cost``: the screen's
    predicted time relative to the exact path."""

    precision: str
    band: float
    label: str
    bf16_copy: bool = False
    auto: bool = False
    screen_cost: float = 1.0
    normalise: str = "mean"  # the margin the band is applied to (a sum's band means something else)

    def model(self, lm: LoadedModel):
        return _bf16_twin(lm) if self.bf16_copy else lm.model

    @property
    def tag(self) -> str:
        """What the cached records of this plan are marked with: their values depend on it."""
        if self.label == "vllm":
            return "vllm"  # another implementation's rounding: never read as the engine's exact records
        if self.band == 0 and self.precision == "float32" and not self.bf16_copy:
            return "exact"
        return f"{self.label}-recheck{self.band}" + ("" if self.normalise == "mean" else f"-{self.normalise}")


EXACT_PLAN = FastPlan("float32", 0.0, "exact")
VLLM_PLAN = FastPlan("model", 0.0, "vllm")  # --backend vllm: vLLM's prompt_logprobs in the model's precision


def machine_plan(lm: LoadedModel) -> MachineDecision | None:
    """The machine's decision for ``lm`` on the packed CPU path (None where that path is not used)."""
    from sarft_core.scoring.packed import supports

    if next(lm.model.parameters()).dtype == torch.float32 and supports(lm.model):
        return machine_decision(lm.model)
    return None


def fast_plan(lm: LoadedModel, options: ScoreOptions) -> FastPlan:
    decision = machine_plan(lm)
    if decision is not None:
        if options.recheck_band is not None:
            return FastPlan("bfloat16", options.recheck_band, "packed-bf16", normalise=options.normalise)
        if decision.plan == "screen":
            return FastPlan("bfloat16", PACKED_BF16_RECHECK_BAND, "packed-bf16", auto=True, screen_cost=decision.screen_cost,
                            normalise=options.normalise)
        return EXACT_PLAN
    band = BF16_RECHECK_BAND if options.recheck_band is None else options.recheck_band
    return FastPlan("float32", band, "bf16", bf16_copy=True, normalise=options.normalise)


def scoring_plan(lm: LoadedModel, options: ScoreOptions) -> FastPlan:
    """The plan a scoring run follows: the fast plan in fast mode, else the exact one."""
    return fast_plan(lm, options) if options.fast else EXACT_PLAN


def batch_tokens(lm: LoadedModel, options: ScoreOptions) -> int:
    if options.max_batch_tokens:
        return options.max_batch_tokens
    # CPU: 1k-token batches give the pool of single-threaded workers enough pieces to end evenly
    # (three passes measured 7% faster than with 2k; one worker is flat from 1k to 4k)
    return 1024 if next(lm.model.parameters()).device.type == "cpu" else 16384


def _bf16_twin(lm: LoadedModel):
    twin = getattr(lm, "_bf16_twin", None)
    if twin is None:
        twin = copy.deepcopy(lm.model).to(torch.bfloat16).eval()
        lm._bf16_twin = twin
    return twin


