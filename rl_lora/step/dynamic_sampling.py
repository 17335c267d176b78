"""DAPO's dynamic sampling (Yu et al. 2025, "over-sample and filter out prompts with accuracy 1 or 0"): a group
whose rewards are all equal has advantage 0 for every completion, so it only dilutes the step. Such groups leave
the step, and further batches of prompts are sampled until the step holds rollout.prompts_per_step informative
groups or rollout.max_sample_batches batches were drawn."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from envs.sample import Sample
from rewards.protocol import ScoredBatch
from rl_lora.types import SampledStep


@dataclass(frozen=True)
class Drawn:
    """One sampling round of a step: its prompts and what was sampled and scored for them."""
    samples: list[Sample]
    sampled: SampledStep


@dataclass(frozen=True)
class FilledStep:
    samples: list[Sample]  # the groups the step trains on, in the order they were drawn
    sampled: SampledStep  # their completions and rewards (times and restarts: every round's, summed)
    batches: int  # sampling rounds drawn
    groups_drawn: int
    groups_dropped: int  # constant groups left out (informative groups drawn past the step's size are not counted)
    zero_variance_groups: float  # the share of drawn groups whose rewards were all equal


def informative(rewards: list[float | None]) -> bool:
    """Rewards that differ within the group (a failed reward, None, does not count)."""
    return len({r for r in rewards if r is not None}) > 1


def _group_rewards(scored: ScoredBatch, group: int, size: int) -> ScoredBatch:
    part = slice(group * size, (group + 1) * size)
    return ScoredBatch(scored.rewards[part], [], {name: values[part] for name, values in scored.parts.items()})


def fill_step(first: Drawn, draw_more: Callable[[int], Drawn], want: int, group_size: int,
              max_batches: int) -> FilledStep:
    """Keep `first`'s informative groups and, while fewer than `want`, call draw_more(round) (round = 1, 2, ...)
    up to max_batches rounds in all. At the cap the step trains on what it has; if no group was informative, on
    the last round as drawn (its advantages are all 0: the step then changes nothing but the optimizer's state)."""
    rounds, kept, drawn, constant = [first], [], 0, 0
    while True:
        current = rounds[-1]
        for index, sample in enumerate(current.samples):
            drawn += 1
            scored = _group_rewards(current.sampled.scored, index, group_size)
            if not informative(scored.rewards):
                constant += 1
            elif len(kept) < want:
                kept.append((sample, current.sampled.groups[index], scored))
        if len(kept) >= want or len(rounds) >= max_batches:
            break
        rounds.append(draw_more(len(rounds)))
    failures = [f for r in rounds for f in r.sampled.scored.failures]
    dropped = constant
    if kept:
        samples = [sample for sample, _, _ in kept]
        groups = [group for _, group, _ in kept]
        scored = ScoredBatch.join([s for _, _, s in kept])
    else:  # every group drawn was constant: the last round is trained on as it is, so it was not dropped
        samples, groups, scored = rounds[-1].samples, rounds[-1].sampled.groups, rounds[-1].sampled.scored
        dropped -= len(samples)
    sampled = SampledStep(groups, ScoredBatch(scored.rewards, failures, scored.parts),
                          generate_s=sum(r.sampled.generate_s for r in rounds),
                          score_s=sum(r.sampled.score_s for r in rounds),
                          restarts=sum(r.sampled.restarts for r in rounds))
    return FilledStep(samples, sampled, len(rounds), drawn, dropped, constant / drawn)
