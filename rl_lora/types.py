"""Records passed between the trainer, the samplers and the learner."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rollout:
    """One scored completion, ready for the learner."""
    sample_id: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    sampler_logprobs: tuple[float, ...]
    reward: float
    advantage: float
    version: int  # the policy version that sampled it


@dataclass(frozen=True)
class Batch:
    """Rollouts as tensors: prompts left-padded to one width, completions right-padded after them."""
    input_ids: torch.Tensor  # [rows, prompt_width + completion_width]
    attention_mask: torch.Tensor  # same shape
    prompt_width: int
    completion_mask: torch.Tensor  # [rows, completion_width], 1 on completion tokens (EOS included)
    sampler_logprobs: torch.Tensor  # [rows, completion_width]
    advantages: torch.Tensor  # [rows]

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: slice) -> "Batch":
        return Batch(self.input_ids[rows], self.attention_mask[rows], self.prompt_width, self.completion_mask[rows],
                     self.sampler_logprobs[rows], self.advantages[rows])


def collate(rollouts: list[Rollout], pad_id: int) -> Batch:
    prompt_width = max(len(r.prompt_ids) for r in rollouts)
    completion_width = max(len(r.completion_ids) for r in rollouts)
    rows = len(rollouts)
    input_ids = torch.full((rows, prompt_width + completion_width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    completion_mask = torch.zeros((rows, completion_width), dtype=torch.float32)
    sampler_logprobs = torch.zeros((rows, completion_width), dtype=torch.float32)
    for i, r in enumerate(rollouts):
        start, end = prompt_width - len(r.prompt_ids), prompt_width + len(r.completion_ids)
        input_ids[i, start:prompt_width] = torch.tensor(r.prompt_ids)
        input_ids[i, prompt_width:end] = torch.tensor(r.completion_ids, dtype=torch.long)
        attention_mask[i, start:end] = 1
        completion_mask[i, :len(r.completion_ids)] = 1
        sampler_logprobs[i, :len(r.completion_ids)] = torch.tensor(r.sampler_logprobs)
    advantages = torch.tensor([r.advantage for r in rollouts], dtype=torch.float32)
    return Batch(input_ids, attention_mask, prompt_width, completion_mask, sampler_logprobs, advantages)
