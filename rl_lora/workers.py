"""RolloutWorker: one inference backend and the reward next to it, run as a Ray actor.

The driver sends prompts and Samples; the worker samples a group per prompt, scores the completions where
they were made, and returns both. New weights arrive as an AdapterUpdate through the object store (kB for
LoRA) and are swapped in memory.
"""
from __future__ import annotations

from envs.sample import Sample
from rewards.protocol import ScoredBatch
from rewards.scoring import RewardScorer
from rl_lora.config import ModelConfig, RewardConfig
from rl_lora.rollout.base import AdapterUpdate, Completion, SamplingParams
from rl_lora.sync import Probe, probe_logprobs


class RolloutWorker:
    def __init__(self, model: ModelConfig, reward: RewardConfig, reward_name: str, task_name: str,
                 batch_size: int = 64, torch_threads: int = 1):
        import torch

        from rl_lora.models import load_causal_lm, load_tokenizer
        from rl_lora.rollout.hf import HFBackend

        # Several workers share the machine's cores; each takes its share, not all of them.
        torch.set_num_threads(torch_threads)
        tokenizer = load_tokenizer(model.name)
        self.backend = HFBackend(load_causal_lm(model.name, model.dtype, model.device), tokenizer, batch_size)
        self.scorer = RewardScorer.from_name(reward_name, timeout_s=reward.timeout_s, on_error=reward.on_error,
                                             task_name=task_name)

    def rollout(self, prompts: list[str], samples: list[Sample], n: int,
                sampling: SamplingParams) -> tuple[list[list[Completion]], ScoredBatch]:
        groups = self.backend.generate(prompts, n, sampling)
        texts = [c.text for group in groups for c in group]
        return groups, self.scorer.score(texts, [s for s in samples for _ in range(n)])

    def load_update(self, update: AdapterUpdate) -> int:
        self.backend.load_update(update)
        return self.backend.version

    def probe(self, probe: Probe) -> tuple[int, list[float]]:
        return self.backend.version, probe_logprobs(self.backend.model, probe)

    def version(self) -> int:
        return self.backend.version
