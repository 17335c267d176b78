"""The seam between the trainer and an inference engine: prompts in, completions with sampler log-probs out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy; log-probs are then those of the untempered policy
    max_new_tokens: int = 256
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    prompt_index: int
    prompt_ids: tuple[int, ...]  # the prompt exactly as the sampler tokenized it (the learner scores the same ids)
    token_ids: tuple[int, ...]  # up to and including the first end-of-sequence token, if one was sampled
    logprobs: tuple[float, ...]  # the sampler's log-prob of each token, from the distribution it sampled
    text: str
    finished: bool  # ended with an end-of-sequence token rather than the length limit
    version: int  # the policy version (learner step) that sampled it


@dataclass(frozen=True)
class AdapterUpdate:
    """What the learner hands the samplers after a step."""
    version: int
    kind: Literal["lora", "full"]
    tensors: dict[str, torch.Tensor] = field(repr=False)  # PEFT key names for LoRA; the state dict for full
    lora_config: dict | None = None  # peft.LoraConfig fields, so a sampler can build the same adapter

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class RolloutBackend(Protocol):
    version: int

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """n completions for each prompt, grouped by prompt."""

    def load_update(self, update: AdapterUpdate) -> None:
        """Serve the weights of `update` from now on."""
