"""Policy losses. Pure tensor functions: easy to check by hand."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossTerms:
    loss: torch.Tensor  # scalar, already divided by the full batch's normaliser
    clipped_tokens: torch.Tensor  # count of tokens whose ratio was clipped (ppo)
    sampler_kl_sum: torch.Tensor  # sum over tokens of KL(sampler || learner), k3 estimator
    base_kl_sum: torch.Tensor  # sum over tokens of KL(learner || base), k3 estimator (0 without a reference)


def _k3(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(p || q) from samples of p: r - 1 - log r, r = q / p. Non-negative."""
    log_ratio = log_q - log_p
    return torch.exp(log_ratio) - 1 - log_ratio


def policy_loss(kind: str, logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, normaliser: torch.Tensor, *, clip_eps: float = 0.2,
                base_logprobs: torch.Tensor | None = None, kl_coef: float = 0.0) -> LossTerms:
    """The batch-normalised loss of one micro-batch.

    `normaliser` gives each token its weight: for token-level normalisation 1 / (tokens in the whole batch),
    for sequence-level 1 / (rows × that row's tokens). Micro-batch losses then add up to the batch loss.
    """
    adv = advantages[:, None]
    ratio = torch.exp(logprobs - sampler_logprobs)
    clipped = torch.zeros((), device=logprobs.device)
    if kind == "is_pg":
        # Sampled by the sampler, weighted to the learner: the ratio is 1 on-policy and the gradient is ∇log p · A.
        per_token = -ratio * adv
    elif kind == "ppo":
        clipped_ratio = ratio.clamp(1 - clip_eps, 1 + clip_eps)
        per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)
        clipped = (((ratio - clipped_ratio).abs() > 0).float() * mask).sum()
    elif kind == "reinforce":
        per_token = -logprobs * adv
    else:
        raise ValueError(f"unknown loss {kind!r}")
    base_kl = torch.zeros_like(per_token)
    if base_logprobs is not None:
        base_kl = _k3(logprobs, base_logprobs)
        per_token = per_token + kl_coef * base_kl
    with torch.no_grad():
        sampler_kl = _k3(sampler_logprobs, logprobs.detach())
    return LossTerms(
        loss=(per_token * mask * normaliser).sum(),
        clipped_tokens=clipped,
        sampler_kl_sum=(sampler_kl * mask).sum(),
        base_kl_sum=(base_kl.detach() * mask).sum(),
    )


def token_weights(completion_mask: torch.Tensor, normalization: str) -> torch.Tensor:
    """Each token's weight in the batch loss (see policy_loss); computed once for the whole batch."""
    if normalization == "token":
        return completion_mask / completion_mask.sum().clamp(min=1)
    per_row = completion_mask.sum(dim=1, keepdim=True).clamp(min=1)
    return completion_mask / per_row / completion_mask.shape[0]
