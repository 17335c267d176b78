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
    """Rollouts as tensors, grouped by prompt: each distinct prompt once (left-padded), then the completions
    sampled from it (right-padded), `repeats[i]` rows for prompt i. The learner runs each prompt through the
    model once per group, not once per completion."""
    prompt_ids: torch.Tensor  # [prompts, prompt_width]
    prompt_mask: torch.Tensor  # [prompts, prompt_width]
    repeats: torch.Tensor  # [prompts], rows per prompt, summing to rows
    completion_ids: torch.Tensor  # [rows, completion_width]
    completion_mask: torch.Tensor  # [rows, completion_width], 1 on completion tokens (EOS included)
    sampler_logprobs: torch.Tensor  # [rows, completion_width]
    advantages: torch.Tensor  # [rows]

    @property
    def rows(self) -> int:
        return self.completion_ids.shape[0]

    def split(self, max_rows: int) -> list[tuple[slice, "Batch"]]:
        """Micro-batches of whole groups, each up to max_rows rows (or one group, if a group is larger), trimmed to
        the columns they use. Returns (row slice into this batch, micro-batch) pairs."""
        parts, first_prompt, first_row = [], 0, 0
        while first_prompt < len(self.repeats):
            last_prompt, rows = first_prompt, 0
            while last_prompt < len(self.repeats) and (rows == 0 or rows + self.repeats[last_prompt] <= max_rows):
                rows += int(self.repeats[last_prompt])
                last_prompt += 1
            p, r = slice(first_prompt, last_prompt), slice(first_row, first_row + rows)
            # Padding columns this micro-batch does not use would only cost compute.
            width = max(int(self.completion_mask[r].sum(1).max()), 1)
            prompt_start = int((self.prompt_mask[p].sum(0) == 0).sum())  # left-padding columns no prompt uses
            parts.append((r, Batch(self.prompt_ids[p, prompt_start:], self.prompt_mask[p, prompt_start:],
                                   self.repeats[p], self.completion_ids[r, :width], self.completion_mask[r, :width],
                                   self.sampler_logprobs[r, :width], self.advantages[r])))
            first_prompt, first_row = last_prompt, first_row + rows
        return parts


def collate(rollouts: list[Rollout], pad_id: int) -> Batch:
    """Consecutive rollouts with the same sample and prompt form one group."""
    prompts: list[tuple[int, ...]] = []
    repeats: list[int] = []
    previous = None
    for r in rollouts:
        key = (r.sample_id, r.prompt_ids)
        if key != previous:
            prompts.append(r.prompt_ids)
            repeats.append(0)
            previous = key
        repeats[-1] += 1
    prompt_width = max(len(p) for p in prompts)
    prompt_ids = torch.full((len(prompts), prompt_width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for i, ids in enumerate(prompts):
        prompt_ids[i, prompt_width - len(ids):] = torch.tensor(ids)
        prompt_mask[i, prompt_width - len(ids):] = 1
    rows, completion_width = len(rollouts), max(len(r.completion_ids) for r in rollouts)
    completion_ids = torch.full((rows, completion_width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((rows, completion_width), dtype=torch.float32)
    sampler_logprobs = torch.zeros((rows, completion_width), dtype=torch.float32)
    for i, r in enumerate(rollouts):
        length = len(r.completion_ids)
        completion_ids[i, :length] = torch.tensor(r.completion_ids, dtype=torch.long)
        completion_mask[i, :length] = 1
        sampler_logprobs[i, :length] = torch.tensor(r.sampler_logprobs)
    advantages = torch.tensor([r.advantage for r in rollouts], dtype=torch.float32)
    return Batch(prompt_ids, prompt_mask, torch.tensor(repeats), completion_ids, completion_mask, sampler_logprobs,
                 advantages)
