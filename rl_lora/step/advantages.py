"""Sampled groups + rewards -> Rollouts with advantages (the part of a step between scoring and learning)."""
from __future__ import annotations

from typing import Sequence

import torch

from rl_lora.types import Completion, Rollout


def group_advantages(rewards: list[list[float]], baseline: str, normalize_std: bool,
                     eps: float = 1e-6) -> list[list[float]]:
    """Per group (one prompt's completions), by `baseline`:

    - group_mean: r_i - mean(group) (GRPO; optionally over the group's std: normalize_std);
    - rloo: r_i - mean of the group's other rewards = n/(n-1) (r_i - mean(group)) (RLOO, Ahmadian et al. 2024);
    - reinforce_pp: r_i - mean(group), then whitened over the whole batch (REINFORCE++, Hu 2025);
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
        flat = torch.cat(advantages)
        spread = flat.std() if flat.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)
        advantages = [(a - flat.mean()) / (spread + eps) for a in advantages]
    return [a.tolist() for a in advantages]


def build_rollouts(sample_ids: Sequence[str], groups: list[list[Completion]], rewards: list[float | None],
                   baseline: str, normalize_std: bool) -> list[Rollout]:
    """`rewards` is flat, group after group. A completion whose reward failed (None, policy `skip`) leaves its
    group before the baseline is taken."""
    flat = iter(rewards)
    kept = [[(c, r) for c in group if (r := next(flat)) is not None] for group in groups]
    advantages = group_advantages([[r for _, r in group] for group in kept], baseline, normalize_std)
    return [
        Rollout(sample_ids[i], c.prompt_ids, c.token_ids, c.logprobs, r, a, c.version)
        for i, (group, group_advantage) in enumerate(zip(kept, advantages))
        for (c, r), a in zip(group, group_advantage)
    ]
