"""What a reward is, and what scoring a batch reports.

A reward is a plain callable `(completion: str, sample: Sample) -> float`. Two other shapes are accepted
unchanged so existing reward code plugs in: TRL's batch reward `(prompts, completions, **kwargs) -> list[float]`
and verl's `compute_score(data_source, solution_str, ground_truth, extra_info) -> float | {"score": float}`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from envs.sample import Sample

RewardFn = Callable[[str, Sample], float]
RewardStyle = Literal["sample", "trl", "verl"]
OnRewardError = Literal["stop", "skip", "zero"]


@dataclass(frozen=True)
class RewardFailure:
    sample_id: str
    completion: str
    reason: str

    def describe(self, max_chars: int = 200) -> str:
        text = self.completion if len(self.completion) <= max_chars else self.completion[:max_chars] + "…"
        return f"reward failed on sample {self.sample_id}: {self.reason}; completion: {text!r}"


@dataclass(frozen=True)
class ScoredBatch:
    """One reward per completion; None where the reward failed and the policy is `skip`."""
    rewards: list[float | None]
    failures: list[RewardFailure]


class RewardSpecError(ValueError):
    """A reward that cannot be used as named (no such module or function, a signature no style fits)."""


class RewardError(Exception):
    """A reward failed and the policy is `stop`."""

    def __init__(self, failure: RewardFailure):
        super().__init__(failure.describe())
        self.failure = failure
