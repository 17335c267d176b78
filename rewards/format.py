"""Format reward: did the completion state a final answer in a form a grader can find?

The cues are the GSM8K grader's (`####`, `\\boxed{}`, `The answer is`, `**Answer:**`, `A:`); finding them is linear in
the completion (the old line-start `A:` pattern backtracked over runs of newlines: 64k of them took 35 s)."""
from __future__ import annotations

from envs.sample import Sample
from rewards.gsm8k import has_answer_cue


def format_reward(completion: str, sample: Sample) -> float:
    return float(has_answer_cue(completion))
