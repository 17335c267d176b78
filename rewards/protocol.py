"""What a reward is, and what scoring a batch reports.

A reward is a plain callable `(completion: str, sample: Sample) -> float` (or `-> Graded`: the score and the answer
it read, which majority voting counts). Two other shapes are accepted
unchanged so existing reward code plugs in: TRL's batch reward `(completions, **kwargs)` or
`(prompts, completions, **kwargs) -> list[float]`, called by keyword as TRL calls it, and verl's
`compute_score(data_source, solution_str, ground_truth, extra_info) -> float | {"score": float}`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence

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
class Graded:
    """What a grader may return instead of a bare float: the score and the answer it read (None: it read none).
    Majority voting (`rl-lora eval` with eval.samples > 1) counts these answers; two completions with the same
    answer must get the same score, so the answer is written as the grader compared it."""
    score: float
    answer: str | None


@dataclass(frozen=True)
class ScoredBatch:
    """One reward per completion; None where the reward failed and the policy is `skip`. With several weighted
    rewards, `parts` holds each one's own values (by its name), and `rewards` their weighted sum. `answers`: the
    answer each completion gave as the grader read it (None where it read none), or None altogether when the reward
    does not say what it read (it returns bare floats)."""
    rewards: list[float | None]
    failures: list[RewardFailure]
    parts: dict[str, list[float | None]] = field(default_factory=dict)
    answers: list[str | None] | None = None

    @staticmethod
    def join(batches: list["ScoredBatch"]) -> "ScoredBatch":
        """Batches of consecutive completions (shards of one step) as one."""
        names = list(batches[0].parts) if batches else []
        answers = None
        if any(b.answers is not None for b in batches):
            answers = [a for b in batches for a in (b.answers if b.answers is not None else [None] * len(b.rewards))]
        return ScoredBatch([r for b in batches for r in b.rewards], [f for b in batches for f in b.failures],
                           {name: [r for b in batches for r in b.parts[name]] for name in names}, answers)


class Scorer(Protocol):
    """Scores completions against their samples: one reward (rewards.scoring.RewardScorer) or several, weighted
    (WeightedRewards)."""

    def score(self, completions: Sequence[str], samples: Sequence[Sample]) -> ScoredBatch: ...

    def close(self) -> None: ...


class RewardSpecError(ValueError):
    """A reward that cannot be used as named (no such module or function, a signature no style fits)."""


class RewardError(Exception):
    """A reward failed and the policy is `stop`."""

    def __init__(self, failure: RewardFailure):
        super().__init__(failure.describe())
        self.failure = failure
