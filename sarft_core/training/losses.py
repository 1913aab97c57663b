"""The RBO objective as small pure functions: L = CE(D) + lambda * KL(D_h).

All functions take tensors already aligned for next-token prediction: ``logits[b, t]`` is the
distribution that predicts ``targets[b, t]``; masks are 1 where a position counts.

Two normalisations are offered:

- ``answer`` (our default): the CE is the mean over every answer token of the optimizer step's
  batch (all accumulation steps and all processes: the trainer passes the step's totals, so a
  split over devices or micro-batches does not change the weighting); the KL is taken at the
  answer positions only, averaged per sequence, then summed over the D_h rows and divided by the
  number of rows in the step's batch (rows outside D_h count as zero, as published).
- ``published``: exactly what the released trainer computes: each row's CE summed over its
  answer tokens and divided by its number of non-pad tokens (prompt included), then averaged
  over the batch; the KL averaged over every non-pad position (prompt and answer) of the row,
  multiplied by the row's flag, averaged over the batch.

KL direction: the released code calls ``F.kl_div(log p_theta, p_ref)``, i.e. KL(p_ref || p_theta)
(``ref||theta``, our default); the paper writes KL(p_theta || p_ref) (``theta||ref``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KL_DIRECTIONS = ("ref||theta", "theta||ref")
LOSS_NORMALISATIONS = ("answer", "published")
IGNORE_INDEX = -100


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position CE (B, T); positions whose target is IGNORE_INDEX get 0."""
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return flat.view(targets.shape)


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, direction: str = "ref||theta") -> torch.Tensor:
    """Per-position KL divergence over the full vocabulary, shape logits.shape[:-1].

    ``ref||theta`` = sum_v p_ref (log p_ref - log p_theta) (the released code);
    ``theta||ref`` = sum_v p_theta (log p_theta - log p_ref) (the paper's formula).
    Gradients flow into ``policy_logits`` only.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"unknown KL direction {direction!r}; use one of {KL_DIRECTIONS}")
    logp = F.log_softmax(policy_logits.float(), dim=-1)
    logq = F.log_softmax(ref_logits.detach().float(), dim=-1)
    if direction == "ref||theta":
        return F.kl_div(logp, logq, reduction="none", log_target=True).sum(-1)
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


def token_nll(policy_logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position CE from log-probabilities (B, T); IGNORE_INDEX targets give 0.

    Same values as :func:`token_cross_entropy`; used when the log-softmax is shared with the KL.
    """
    valid = targets != IGNORE_INDEX
    picked = policy_logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, -picked, torch.zeros_like(picked))


@torch.no_grad()
def prepare_reference(ref_logits: torch.Tensor, direction: str = "ref||theta") -> dict:
    """What the KL needs from the reference, computed once without gradients.

    For ``ref||theta`` that is p_ref and its negative entropy sum_v p_ref log p_ref, so that
    KL = negent - sum_v p_ref log p_theta: a batched dot product, no (rows x vocab) temporary
    kept for the backward pass beyond p_ref itself. For ``theta||ref`` it is log p_ref.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"unknown KL direction {direction!r}; use one of {KL_DIRECTIONS}")
    logq = F.log_softmax(ref_logits.float(), dim=-1)
    if direction == "theta||ref":
        return {"direction": direction, "logq": logq}
    p = logq.exp()
    negent = torch.einsum("...v,...v->...", p, logq)
    return {"direction": direction, "p": p, "negent": negent}


def token_kl_from_logp(policy_logp: torch.Tensor, reference: dict) -> torch.Tensor:
    """Per-position KL from the policy's log-probabilities and :func:`prepare_reference`'s output.

    Equal to :func:`token_kl` on the corresponding logits (tested), with less memory.
    """
    if reference["direction"] == "ref||theta":
        return reference["negent"] - torch.einsum("...v,...v->...", reference["p"], policy_logp)
    return torch.einsum("...v,...v->...", policy_logp.exp(), policy_logp - reference["logq"])


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the masked positions of each row (0 for a row with no position)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def ce_loss(token_ce: torch.Tensor, answer_mask: torch.Tensor, nonpad_count: torch.Tensor | None = None, normalisation: str = "answer",
            total_tokens: float | None = None) -> torch.Tensor:
    """Cross-entropy of the answer tokens.

    ``answer``: sum over all answer tokens / number of answer tokens in the batch, or
    ``total_tokens`` when given (the answer tokens of the whole optimizer step, of which this
    batch is a part: the parts then add up to the step's mean).
    ``published``: per row, sum over its answer tokens / its non-pad token count; batch mean.
    """
    if normalisation == "answer":
        mask = answer_mask.to(token_ce.dtype)
        if total_tokens is not None:
            return (token_ce * mask).sum() / max(float(total_tokens), 1.0)
        return (token_ce * mask).sum() / mask.sum().clamp(min=1.0)
    if normalisation == "published":
        if nonpad_count is None:
            raise ValueError("published normalisation needs the non-pad token count of each row")
        row_sum = (token_ce * answer_mask.to(token_ce.dtype)).sum(-1)
        return (row_sum / (nonpad_count.to(token_ce.dtype) + 1e-5)).mean()
    raise ValueError(f"unknown normalisation {normalisation!r}; use one of {LOSS_NORMALISATIONS}")


def kl_loss(token_kl_h: torch.Tensor, mask_h: torch.Tensor, batch_rows: int) -> torch.Tensor:
    """The safety term of one batch, from the KL of its D_h rows only.

    Each D_h row's KL is averaged over its masked positions; the sum over D_h rows is divided by
    the number of rows of the whole batch (the released code multiplies by a 0/1 flag and takes
    the batch mean, which is the same), or of the whole optimizer step when the batch is a part
    of it. With no D_h row the term is exactly 0.
    """
    if batch_rows <= 0:
        raise ValueError("batch_rows must be positive")
    if token_kl_h.numel() == 0:
        return token_kl_h.new_zeros(())
    return sequence_mean(token_kl_h, mask_h).sum() / batch_rows


def rbo_loss(ce: torch.Tensor, kl: torch.Tensor, lam: float) -> torch.Tensor:
    """L = CE + lambda * KL (lambda = 0 gives plain SFT)."""
    if lam < 0:
        raise ValueError("lambda must be >= 0")
    return ce + lam * kl if lam else ce
