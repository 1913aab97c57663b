"""An independent measure of each training sample's harm: its first-order influence on refusal.

For a training sample z and a held-out set of harmful prompts, the refusal margin
M(theta) = mean over prompts of [mean log p(refusal | prompt) - mean log p(compliance | prompt)]
(:mod:`sarft_core.evaluation.margin`'s measure) says how far the model leans towards refusing.
One SGD step of size eta on the training loss L(z) (the trainer's cross-entropy: the answer's
per-token mean, empty system prompt) changes it, to first order, by

    Delta M = -eta * grad L(z) . grad M = eta * influence(z),  influence(z) = grad log p(y|x) . grad M.

A negative influence predicts that training on z erodes refusal; RDS claims to find those
samples without this gradient. ``influence`` is computed without one backward pass per sample:
it is the directional derivative of log p(y|x) along grad M, taken by central differences of two
exact float32 scoring passes (the RDS engine's, so 70 samples cost about two passes), after one
backward pass over the margin prompts for grad M.

Parametrisation: the weights of the linear layers training adapts (``targets``). With full
fine-tuning that is exact. With LoRA (B starts at zero, A random), the first step moves only B,
and W's change is dB . A; its first-order effect is grad_W L A^T A grad_W M^T, whose expectation
over LoRA's random A is proportional to grad_W L . grad_W M. So the influence over the full
target weights is LoRA's first-step influence averaged over its initialisation, free of one
seed's A (docs/flags.md).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from sarft_core.chat import MAX_ANSWER_TOKENS, MAX_PROMPT_TOKENS
from sarft_core.errors import SarftError
from sarft_core.evaluation.margin import COMPLIANT_OPENING, REFUSAL_CONTINUATION, continuation_ids

# every linear projection of a Llama-family decoder layer (the reproduction grid's LoRA targets)
INFLUENCE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# the central difference moves M by about this much (nats/token) to first order: large enough that
# float32 rounding in log p(y|x) is negligible, small enough that the curvature is (tests check it)
STEP_NATS = 0.02
# the refusal margin's own continuations (sarft_core.evaluation.margin): one measure, one wording
REFUSAL = REFUSAL_CONTINUATION
COMPLIANCE = COMPLIANT_OPENING


@dataclass(frozen=True)
class MarginPrompt:
    prompt: str
    compliance: str = COMPLIANCE  # the prompt's own compliant opening (AdvBench's target) where known


def target_parameters(model, targets: Sequence[str] = INFLUENCE_TARGETS) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, weight) of every linear layer whose name ends in one of ``targets``."""
    out = [(f"{name}.weight", mod.weight) for name, mod in model.named_modules()
           if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets]
    if not out:
        raise SarftError(f"the model has no linear layer named {', '.join(targets)}",
                         "give the names of the layers training adapts (e.g. q_proj,v_proj)")
    return out


def _mean_answer_logp(model, prompt_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
    """Mean log p(answer | prompt) with autograd (one sequence; the LM head runs on the answer's
    positions only)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + answer_ids], device=device)
    logits = model(input_ids=ids, logits_to_keep=len(answer_ids) + 1).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, torch.tensor(answer_ids, device=device)[:, None]).mean()


def _prompt_margin(model, tokenizer, p: "MarginPrompt") -> torch.Tensor:
    rp, ra = continuation_ids(tokenizer, "", p.prompt, REFUSAL, MAX_PROMPT_TOKENS)
    cp, ca = continuation_ids(tokenizer, "", p.prompt, p.compliance, MAX_PROMPT_TOKENS)
    return _mean_answer_logp(model, rp, ra) - _mean_answer_logp(model, cp, ca)


def refusal_margin(model, tokenizer, prompts: Sequence[MarginPrompt]) -> float:
    """M: the mean over ``prompts`` of the refusal's mean log-prob minus the compliance's."""
    if not prompts:
        raise SarftError("no held-out harmful prompts for the refusal margin", "give at least one prompt")
    with torch.no_grad():
        return sum(float(_prompt_margin(model, tokenizer, p)) for p in prompts) / len(prompts)


def margin_gradient(model, tokenizer, prompts: Sequence[MarginPrompt], params) -> tuple[float, list[torch.Tensor]]:
    """(M, grad M over ``params``): one backward pass per prompt, accumulated, with every other
    weight frozen meanwhile (no gradient is computed for it; memory stays that of one prompt)."""
    if not prompts:
        raise SarftError("no held-out harmful prompts for the refusal margin", "give at least one prompt")
    was_training = model.training
    model.eval()
    wanted = {id(p) for _, p in params}
    before = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
        p.grad = None
    total = 0.0
    try:
        for prompt in prompts:
            m = _prompt_margin(model, tokenizer, prompt) / len(prompts)
            m.backward()
            total += float(m.detach())
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for _, p in params]
    finally:
        for p, flag, grad in before:
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)
    return total, grads


@contextlib.contextmanager
def shifted(params, direction: list[torch.Tensor], step: float):
    """The weights moved by ``step * direction`` inside the block, restored exactly after it."""
    saved = [p.detach().clone() for _, p in params]
    try:
        with torch.no_grad():
            for (_, p), d in zip(params, direction):
                p.add_(d, alpha=step)
        yield
    finally:
        with torch.no_grad():
            for (_, p), s in zip(params, saved):
                p.copy_(s)


def training_logps(lm, samples, max_batch_tokens: int = 1024) -> list[float]:
    """Mean log p(answer | input) of each sample as training sees it (empty system prompt, the
    trainer's cut-offs), by the exact float32 engine, computed afresh (no cache: the weights may
    have been shifted)."""
    from sarft_core.scoring.engine import encode_passes, forget_weights, reduce_logps, score_passes

    forget_weights(lm.model)  # the packed forward keeps reordered copies of the weights
    enc = encode_passes(lm.tokenizer, {"train": ""}, samples, MAX_PROMPT_TOKENS, MAX_ANSWER_TOKENS)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    out = score_passes(lm.model, enc.prompt_ids, enc.answer_ids, pad, max_batch_tokens, prefix_kv_caches={"train": {}})
    forget_weights(lm.model)
    return [reduce_logps(t) for t in out["train"].token_logps]


def influences(lm, samples, prompts: Sequence[MarginPrompt], targets: Sequence[str] = INFLUENCE_TARGETS,
               progress: Callable[[str], None] | None = None) -> dict:
    """{"influence": one value per sample, "margin": M, "step": the difference's step, "grad_norm": |grad M|}."""
    if not samples:
        raise SarftError("no samples to validate", "give a data file with at least one sample for this role")
    params = target_parameters(lm.model, targets)
    if progress:
        progress("gradient of the refusal margin")
    m, grad = margin_gradient(lm.model, lm.tokenizer, prompts, params)
    norm2 = float(sum((g.double() ** 2).sum() for g in grad))
    if not norm2 > 0 or norm2 != norm2:
        raise SarftError("the refusal margin's gradient is zero or not finite on these weights",
                         "check the model (a diverged run?) or give other prompts")
    step = STEP_NATS / norm2  # moves M by about STEP_NATS along its own gradient
    lps = {}
    for sign in (+1, -1):
        if progress:
            progress(f"samples at {'+' if sign > 0 else '-'}step")
        with shifted(params, grad, sign * step):
            lps[sign] = training_logps(lm, samples)
    values = [(p - q) / (2 * step) for p, q in zip(lps[+1], lps[-1])]
    return {"influence": values, "margin": m, "step": step, "grad_norm": norm2 ** 0.5}
