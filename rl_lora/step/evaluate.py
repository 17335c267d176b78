"""Greedy test-set accuracy of a model (optionally with an adapter), with per-sample records."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from envs.environment import ENV_ERROR
from envs.sample import Sample
from rewards.protocol import Scorer
from rl_lora.types import Sampler, SamplingBackend, SamplingParams


@dataclass(frozen=True)
class EvalRecord:
    sample_id: str
    answer: str
    completion: str
    reward: float | None
    finished: bool
    num_tokens: int
    reward_failed: bool = False  # the reward raised, hung or returned a non-number (scored by reward.on_error)
    turns: int = 1  # assistant turns of the episode (env.name=tools: the completion is the last one)
    tool_calls: int = 0
    tool_errors: int = 0
    stop_reason: str | None = None


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # mean reward over the completions the reward could score
    num_samples: int
    num_reward_failures: int
    mean_tokens: float
    truncated_fraction: float  # hit the token limit before an end-of-sequence token
    seconds: float
    records: tuple[EvalRecord, ...]
    tool_call_fraction: float = 0.0  # episodes that called a tool
    tool_ok_fraction: float = 0.0  # ...every call answered without an error
    mean_turns: float = 1.0

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "records"}

    def records_jsonl(self) -> str:
        """One JSON line per problem: what a run's evals/step_N.jsonl and `rl-lora eval --out` hold."""
        return "".join(json.dumps(asdict(r)) + "\n" for r in self.records)


def evaluate(backend: SamplingBackend | Sampler, prompts: Sequence[str], samples: Sequence[Sample],
             scorer: Scorer, max_new_tokens: int, batch_size: int = 32,
             progress: Callable[[int], None] = lambda done: None) -> EvalResult:
    """Greedy, in batches of `batch_size` prompts: the KV cache of long generations stays bounded. `progress` is
    told how many prompts each batch finished."""
    start = time.perf_counter()
    greedy = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    completions = []
    for first in range(0, len(prompts), batch_size):
        batch = list(prompts[first:first + batch_size])
        # A Sampler runs whole episodes of the run's environment (tools, several turns); a bare backend, one turn.
        episodes = {"samples": list(samples[first:first + batch_size])} if isinstance(backend, Sampler) else {}
        completions += [group[0] for group in backend.generate(batch, 1, greedy, **episodes)]
        progress(len(batch))
    scored = scorer.score([c.text for c in completions], samples)
    failed = {f.sample_id for f in scored.failures}
    # An episode its environment broke (env.on_error=skip) is worth 0 here too, whatever its last turn says.
    rewards = [0.0 if c.stop_reason == ENV_ERROR else r for c, r in zip(completions, scored.rewards)]
    records = tuple(
        EvalRecord(s.id, s.answer, c.text, r, c.finished, len(c.token_ids), s.id in failed, c.turns, c.tool_calls,
                   c.tool_errors, c.stop_reason)
        for s, c, r in zip(samples, completions, rewards)
    )
    graded = [r for r in rewards if r is not None]
    return EvalResult(
        accuracy=sum(graded) / len(graded) if graded else 0.0,
        num_samples=len(records),
        num_reward_failures=len(scored.failures),
        mean_tokens=sum(r.num_tokens for r in records) / max(len(records), 1),
        truncated_fraction=sum(not r.finished for r in records) / max(len(records), 1),
        seconds=time.perf_counter() - start,
        records=records,
        tool_call_fraction=sum(r.tool_calls > 0 for r in records) / max(len(records), 1),
        tool_ok_fraction=sum(r.tool_calls > 0 and r.tool_errors == 0 for r in records) / max(len(records), 1),
        mean_turns=sum(r.turns for r in records) / max(len(records), 1),
    )
