"""Format reward: did the completion state a final answer in a form a grader can find?"""
from __future__ import annotations

from envs.sample import Sample
from rewards.gsm8k import has_answer_cue


def format_reward(completion: str, sample: Sample) -> float:
    return float(has_answer_cue(completion))
