"""Test-set accuracy of a model (optionally with an adapter), with per-problem records: greedy, or sampled
(eval.samples=N: mean@N, pass@k, maj@N, rl_lora.step.sampled)."""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from envs.environment import ENV_ERROR
from envs.sample import Sample
from rewards.protocol import Scorer
from rl_lora.config import EvalConfig
from rl_lora.step.sampled import ProblemTally, sampled_metrics
from rl_lora.types import Completion, Sampler, SamplingBackend, SamplingParams


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
    # Sampled evaluation (eval.samples > 1; None otherwise): the fields above describe the greedy completion when
    # eval.greedy=true, else the first sample.
    samples: int | None = None  # samples the reward graded
    correct: int | None = None  # ...with full credit
    answers: dict[str, int] | None = None  # votes per answer as the grader read it, most voted first
    majority: float | None = None  # this problem's maj@N (a tie split evenly: rl_lora.step.sampled)


_SAMPLED_KEYS = ("samples", "correct", "answers", "majority")


@dataclass(frozen=True)
class SampledEval:
    """eval.samples=N completions per problem at a temperature, in generate calls of at most batch_size
    completions; `greedy`: a greedy pass too; `ks`: the k of pass@k; `seed`: the first call's seed."""
    samples: int
    temperature: float
    ks: tuple[int, ...]
    greedy: bool = False
    seed: int = 0


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # greedy: mean reward over the completions the reward could score; sampled only: mean@N
    num_samples: int
    num_reward_failures: int
    mean_tokens: float
    truncated_fraction: float  # hit the token limit before an end-of-sequence token
    seconds: float
    records: tuple[EvalRecord, ...]
    tool_call_fraction: float = 0.0  # episodes that called a tool
    tool_ok_fraction: float = 0.0  # ...every call answered without an error
    mean_turns: float = 1.0
    samples_per_problem: int = 1
    temperature: float = 0.0
    greedy_accuracy: float | None = None  # None: no greedy pass (sampled only)
    mean_at_n: float | None = None  # mean reward of the N samples: pass@1 for a 0/1 reward
    pass_at_k: dict[str, float] | None = None  # {"k": pass@k}, the unbiased estimator
    maj_at_n: float | None = None  # None: the reward does not say what answer it read

    def sampled_summary(self) -> dict[str, float]:
        """{"mean@N", "pass@k" for each k, "maj@N", "greedy"} of a sampled evaluation ({} for a greedy one)."""
        if self.pass_at_k is None:
            return {}
        n = self.samples_per_problem
        found = {f"mean@{n}": self.mean_at_n, **{f"pass@{k}": value for k, value in self.pass_at_k.items()},
                 f"maj@{n}": self.maj_at_n, "greedy": self.greedy_accuracy}
        return {name: value for name, value in found.items() if value is not None}

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "records"}

    def records_jsonl(self) -> str:
        """One JSON line per problem: what a run's evals/step_N.jsonl and `rl-lora eval --out` hold (a greedy
        evaluation's lines without the sampled counts, as before they existed)."""
        return "".join(json.dumps({k: v for k, v in asdict(r).items() if v is not None or k not in _SAMPLED_KEYS})
                       + "\n" for r in self.records)


def sampled_eval(config: EvalConfig, seed: int) -> SampledEval | None:
    """What eval.* asks for: None for greedy accuracy alone (samples=1 at temperature 0)."""
    if config.samples == 1 and config.sampling_temperature == 0:
        return None
    # The seed is the same at every evaluation of a run: steps are compared on the same random numbers.
    return SampledEval(config.samples, config.sampling_temperature, config.ks(), config.greedy, seed * 1_000_033 + 7)


def _calls(count: int, n: int, batch_size: int) -> list[tuple[range, int]]:
    """(problems, samples each) per generate call: at most batch_size completions a call (at least one prompt's
    one), so memory stays bounded however large n grows."""
    per_prompt = min(n, batch_size)
    prompts_per_call = max(1, batch_size // per_prompt)
    calls = []
    for done in range(0, n, per_prompt):
        take = min(per_prompt, n - done)
        calls += [(range(first, min(first + prompts_per_call, count)), take)
                  for first in range(0, count, prompts_per_call)]
    return calls


def _generate(backend: SamplingBackend | Sampler, prompts: Sequence[str], samples: Sequence[Sample], n: int,
              params: SamplingParams, batch_size: int):
    """Yields (problem index, completion) per generate call, each call with its own seed."""
    for call, (problems, take) in enumerate(_calls(len(prompts), n, batch_size)):
        # A Sampler runs whole episodes of the run's environment (tools, several turns); a bare backend, one turn.
        episodes = {"samples": [samples[i] for i in problems]} if isinstance(backend, Sampler) else {}
        seeded = SamplingParams(params.temperature, params.max_new_tokens,
                                None if params.seed is None else params.seed + call)
        groups = backend.generate([prompts[i] for i in problems], take, seeded, **episodes)
        yield [(i, c) for i, group in zip(problems, groups) for c in group]


@dataclass
class _Pass:
    """One pass over the test set (greedy or sampled), scored a generate call at a time."""
    first: list = field(default_factory=list)  # per problem: (completion, reward, failed) of its first completion
    tallies: list[ProblemTally] = field(default_factory=list)
    failures: int = 0
    reads_answers: bool = False
    # Sums over every completion (its text is not kept): count, tokens, hit the limit, turns, called a tool, ok.
    totals: Counter = field(default_factory=Counter)

    def score(self, batch: list[tuple[int, Completion]], samples: Sequence[Sample], scorer: Scorer) -> None:
        problems = [samples[i] for i, _ in batch]
        scored = scorer.score([c.text for _, c in batch], problems)
        failed = {f.sample_id for f in scored.failures}
        answers = scored.answers if scored.answers is not None else [None] * len(batch)
        self.reads_answers |= scored.answers is not None
        self.failures += len(scored.failures)
        for (index, completion), sample, reward, answer in zip(batch, problems, scored.rewards, answers):
            if completion.stop_reason == ENV_ERROR:  # its environment broke it (env.on_error=skip): worth 0 here too
                reward, answer = 0.0, None
            if self.first[index] is None:
                self.first[index] = (completion, reward, sample.id in failed)
            self.tallies[index].add(reward, answer)
            self.totals.update(count=1, tokens=len(completion.token_ids), truncated=not completion.finished,
                               turns=completion.turns, called=completion.tool_calls > 0,
                               ok=completion.tool_calls > 0 and completion.tool_errors == 0)


def _run_pass(backend, prompts, samples, scorer, n: int, params: SamplingParams, batch_size: int,
              progress: Callable[[int], None]) -> _Pass:
    done = _Pass([None] * len(prompts), [ProblemTally() for _ in prompts])
    for batch in _generate(backend, prompts, samples, n, params, batch_size):
        done.score(batch, samples, scorer)
        progress(len(batch))
    return done


def evaluate(backend: SamplingBackend | Sampler, prompts: Sequence[str], samples: Sequence[Sample],
             scorer: Scorer, max_new_tokens: int, batch_size: int = 32,
             progress: Callable[[int], None] = lambda done: None, sampled: SampledEval | None = None) -> EvalResult:
    """Greedy (sampled=None), or eval.samples=N completions per problem (and a greedy pass when asked). Generated
    in calls of at most `batch_size` completions, each scored at once, so only counts are kept: the KV cache and
    the texts held stay bounded. `progress` is told how many completions each call finished."""
    start = time.perf_counter()
    greedy = None
    if sampled is None or sampled.greedy:
        greedy = _run_pass(backend, prompts, samples, scorer, 1, SamplingParams(0.0, max_new_tokens), batch_size,
                           progress)
    drawn = None
    if sampled is not None:
        drawn = _run_pass(backend, prompts, samples, scorer, sampled.samples,
                          SamplingParams(sampled.temperature, max_new_tokens, seed=sampled.seed), batch_size,
                          progress)
    shown = greedy or drawn  # the pass the records' completions and the token and tool statistics describe
    records = tuple(_record(s, *first, drawn.tallies[i] if drawn else None)
                    for i, (s, first) in enumerate(zip(samples, shown.first)))
    greedy_accuracy = _mean_reward(greedy.tallies) if greedy else None
    metrics = {}
    if drawn is not None:
        mean_at_n, passes, majority = sampled_metrics(drawn.tallies, sampled.ks, drawn.reads_answers)
        metrics = dict(samples_per_problem=sampled.samples, temperature=sampled.temperature, mean_at_n=mean_at_n,
                       pass_at_k=passes, maj_at_n=majority)
    totals = shown.totals
    count = max(totals["count"], 1)
    return EvalResult(
        accuracy=greedy_accuracy if greedy_accuracy is not None else metrics["mean_at_n"],
        num_samples=len(records),
        num_reward_failures=(greedy.failures if greedy else 0) + (drawn.failures if drawn else 0),
        mean_tokens=totals["tokens"] / count,
        truncated_fraction=totals["truncated"] / count,
        seconds=time.perf_counter() - start,
        records=records,
        tool_call_fraction=totals["called"] / count,
        tool_ok_fraction=totals["ok"] / count,
        mean_turns=totals["turns"] / count if totals["count"] else 1.0,
        greedy_accuracy=greedy_accuracy,
        **metrics,
    )


def _mean_reward(tallies: Sequence[ProblemTally]) -> float:
    graded = sum(t.graded for t in tallies)
    return sum(t.reward_sum for t in tallies) / graded if graded else 0.0


def _record(sample: Sample, completion: Completion, reward: float | None, failed: bool,
            tally: ProblemTally | None) -> EvalRecord:
    counts = {}
    if tally is not None:
        counts = dict(samples=tally.graded, correct=tally.correct, answers=dict(tally.votes.most_common()),
                      majority=float(tally.majority))
    return EvalRecord(sample.id, sample.answer, completion.text, reward, completion.finished,
                      len(completion.token_ids), failed, completion.turns, completion.tool_calls,
                      completion.tool_errors, completion.stop_reason, **counts)
