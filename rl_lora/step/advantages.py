"""Sampled groups + rewards -> Rollouts with advantages (the part of a step between scoring and learning)."""
from __future__ import annotations

from typing import Sequence

import torch

from rl_lora.types import Completion, Rollout


def group_advantages(rewards: list[list[float]], baseline: str, normalize_std: bool, eps: float = 1e-6,
                     token_counts: list[list[int]] | None = None) -> list[list[float]]:
    """Per group (one prompt's completions), by `baseline`:

    - group_mean: r_i - mean(group) (GRPO; optionally over the group's std: normalize_std);
    - rloo: r_i - mean of the group's other rewards = n/(n-1) (r_i - mean(group)) (RLOO, Ahmadian et al. 2024);
    - reinforce_pp: r_i - mean(group), then whitened over the batch's tokens (REINFORCE++, Hu 2025:
      whiten_over_tokens; `token_counts` gives each completion's trained tokens, in the shape of `rewards`);
    - none: r_i.
    """
    advantages = []
    for group in rewards:
        values = torch.tensor(group, dtype=torch.float64)
        if baseline in ("group_mean", "reinforce_pp"):
            centred = values - values.mean()
        elif baseline == "rloo":
            n = len(group)
            centred = (values - values.mean()) * (n / (n - 1)) if n > 1 else torch.zeros_like(values)
        else:
            centred = values
        if normalize_std and len(group) > 1 and baseline != "reinforce_pp":
            centred = centred / (values.std() + eps)
        advantages.append(centred)
    if baseline == "reinforce_pp" and advantages:
        if token_counts is None:
            raise ValueError("reinforce_pp whitens over tokens: pass token_counts")
        advantages = whiten_over_tokens(advantages, token_counts)
    return [a.tolist() for a in advantages]


def whiten_over_tokens(advantages: list[torch.Tensor], token_counts: list[list[int]]) -> list[torch.Tensor]:
    """REINFORCE++'s batch normalisation as verl computes it (masked_whiten over the response mask): every trained
    token carries its completion's advantage, so a completion counts once per token; A' = (A - mean) / sqrt(var +
    1e-8), the variance unbiased over the N tokens (× N / (N - 1)). The mean is a plain one (verl's adds 1e-8 to
    N, a zero-division guard). With fewer than 2 tokens (verl raises) every advantage is 0: the one token is the
    mean."""
    flat = torch.cat(advantages)
    counts = torch.tensor([n for group in token_counts for n in group], dtype=torch.float64)
    total = counts.sum()
    if total < 2:
        return [torch.zeros_like(a) for a in advantages]
    mean = (flat * counts).sum() / total
    var = ((flat - mean) ** 2 * counts).sum() / (total - 1)
    return [(a - mean) * torch.rsqrt(var + 1e-8) for a in advantages]


def overlong_penalty(length: int, max_new_tokens: int, buffer: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the reward: 0 up to max_new_tokens -
    buffer tokens, then falling linearly to -factor at max_new_tokens."""
    if buffer <= 0 or length <= max_new_tokens - buffer:
        return 0.0
    return -factor * min(1.0, (length - (max_new_tokens - buffer)) / buffer)


def build_rollouts(sample_ids: Sequence[str], groups: list[list[Completion]], rewards: list[float | None],
                   baseline: str, normalize_std: bool, *, max_new_tokens: int | None = None, overlong_buffer: int = 0,
                   overlong_factor: float = 1.0, mask_truncated: bool = False) -> list[Rollout]:
    """`rewards` is flat, group after group. A completion whose reward failed (None, policy `skip`) leaves its
    group before the baseline is taken. With overlong_buffer, long completions lose reward before the baseline
    (overlong_penalty); with mask_truncated, completions cut at the length limit leave the batch after it (DAPO's
    overlong filtering: they carry no loss, and count in no normaliser, REINFORCE++'s whitening included)."""
    flat = iter(rewards)
    kept = [[(c, r) for c in group if (r := next(flat)) is not None] for group in groups]
    if overlong_buffer and max_new_tokens:
        kept = [[(c, r + overlong_penalty(len(c.token_ids), max_new_tokens, overlong_buffer, overlong_factor))
                 for c, r in group] for group in kept]
    advantages = group_advantages([[r for _, r in group] for group in kept], baseline, normalize_std,
                                  token_counts=[[_trained_tokens(c, mask_truncated) for c, _ in group]
                                                for group in kept])
    return [
        Rollout(sample_ids[i], c.prompt_ids, c.token_ids, c.logprobs, r, a, c.version, c.loss_mask)
        for i, (group, group_advantage) in enumerate(zip(kept, advantages))
        for (c, r), a in zip(group, group_advantage)
        if not (mask_truncated and not c.finished)
    ]


def _trained_tokens(completion: Completion, mask_truncated: bool) -> int:
    """The tokens of a completion the loss trains on: the policy's own (an environment's answers between turns
    are not), none for a cut completion that algo.mask_truncated drops."""
    if mask_truncated and not completion.finished:
        return 0
    return sum(completion.loss_mask) if completion.loss_mask is not None else len(completion.token_ids)
