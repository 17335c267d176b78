"""Sampled groups + rewards -> Rollouts with advantages (the part of a step between scoring and learning)."""
from __future__ import annotations

from typing import Sequence

import torch

from rl_lora.types import Completion, Rollout


def group_advantages(rewards: list[list[float]], baseline: str, normalize_std: bool,
                     eps: float = 1e-6) -> list[list[float]]:
    """Per group (one prompt's completions): reward minus the group mean (optionally over its std)."""
    advantages = []
    for group in rewards:
        values = torch.tensor(group, dtype=torch.float64)
        centred = values - values.mean() if baseline == "group_mean" else values
        if normalize_std and len(group) > 1:
            centred = centred / (values.std() + eps)
        advantages.append(centred.tolist())
    return advantages


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
