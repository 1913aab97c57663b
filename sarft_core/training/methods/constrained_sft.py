"""Constrained SFT (Qi et al., ICLR 2025, "Safety Alignment Should Be Made More Than Just a Few
Tokens Deep", Eq. 3): a token-wise constraint against the aligned reference,

    L = E[ sum_t  -(2 / beta_t) * log sigmoid(beta_t * log(pi_theta(y_t | x, y_<t) / pi_ref(y_t | x, y_<t))) ]

with beta_t large on the first answer tokens (where safety alignment lives) and small after:
the paper's fine-tuning-attack setting beta_1 = 0.5, beta_t = 2 for 2 <= t <= 5, beta_t = 0.1 for
t > 5. As beta -> 0 a token's gradient is SFT's; a large beta saturates the sigmoid once the policy
has moved above the reference, so the first tokens cannot drift far from it. pi_ref is the model
the trainer already holds (the LoRA adapter disabled, or the frozen copy for full weights).
"""
from __future__ import annotations

from sarft_core.training.methods.base import LossBatch, Method, register

BETA_FIRST, BETA_EARLY, BETA_LATE = 0.5, 2.0, 0.1
EARLY_TOKENS = 5  # answer tokens 1..5 get beta_1 / beta_early


def position_betas(answer_index, first: float = BETA_FIRST, early: float = BETA_EARLY, late: float = BETA_LATE,
                   early_tokens: int = EARLY_TOKENS):
    """beta_t per position from the 0-based answer index (t = index + 1)."""
    import torch

    index = answer_index.to(torch.long)
    betas = torch.where(index < early_tokens, torch.full(index.shape, early, dtype=torch.float32, device=index.device),
                        torch.full(index.shape, late, dtype=torch.float32, device=index.device))
    return torch.where(index == 0, torch.full_like(betas, first), betas)


def constrained_token_loss(policy_logp, reference_logp, beta):
    """-(2/beta) log sigmoid(beta (log pi_theta - log pi_ref)), elementwise (the reference carries no gradient)."""
    import torch.nn.functional as F

    return -(2.0 / beta) * F.logsigmoid(beta * (policy_logp - reference_logp.detach()))


def constrained_loss(batch: LossBatch):
    """(loss, ce, kl) of one micro-batch: the constrained tokens, normalised as the CE would be; the
    plain CE is returned for the log (comparable with SFT's), and no KL term."""
    import torch

    from sarft_core.training.losses import IGNORE_INDEX, ce_loss, token_nll

    nll = token_nll(batch.logp, batch.targets)
    valid = batch.targets != IGNORE_INDEX
    policy = torch.where(valid, -nll, torch.zeros_like(nll))
    tokens = constrained_token_loss(policy, batch.reference_logp, position_betas(batch.answer_index.clamp(min=0)))
    tokens = torch.where(valid, tokens, torch.zeros_like(tokens))
    loss = ce_loss(tokens, batch.answer_mask, batch.nonpad, batch.normalisation, total_tokens=batch.total_tokens)
    ce = ce_loss(nll.detach(), batch.answer_mask, batch.nonpad, batch.normalisation, total_tokens=batch.total_tokens)
    return loss, ce, ce.new_zeros(())


register(Method("constrained-sft", "Constrained SFT", "#bcbd22",
                "SFT with Qi et al.'s token-wise constraint to the reference, strongest on the first answer tokens",
                loss=constrained_loss, reference_tokens=True, labels_lambda=False, order=8))
