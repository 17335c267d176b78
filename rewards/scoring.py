"""Score completions with a reward, so that no failure passes as a silent 0.

User rewards run in worker child processes (a pool: one call per core side by side) with a per-completion time
limit (a hang is cut off and reported); built-in graders run in-process (MATH's comparisons in a pool of their
own). Every failure (exception, timeout, non-number, NaN) is reported with the sample id and text, then handled by
the policy: `stop` raises, `skip` leaves the reward out (None), `zero` scores 0.
"""
from __future__ import annotations

import logging
import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from envs.sample import Sample
from rewards.protocol import Graded, OnRewardError, RewardError, RewardFailure, RewardSpecError, ScoredBatch
from rewards.registry import BUILTIN_REWARDS, GRADERS, RewardRef, resolve_reward, reward_spec
from envs.workers import IMPORT_TIMEOUT_S, WorkerError, WorkerPool, WorkerTimeout, default_pool_size

log = logging.getLogger(__name__)


class _Failed(Exception):
    pass


def _as_reward(value: Any) -> float | Graded:
    if isinstance(value, Graded):  # a score and the answer the grader read
        if value.answer is not None and not isinstance(value.answer, str):
            raise _Failed(f"returned an answer {value.answer!r} ({type(value.answer).__name__}), not a str or None")
        return Graded(_as_reward(value.score), value.answer)
    if isinstance(value, dict) and "score" in value:  # verl rewards may return {"score": ..., ...}
        value = value["score"]
    if not isinstance(value, numbers.Real):  # bools count: True is a reward of 1
        raise _Failed(f"returned {value!r} ({type(value).__name__}), not a number")
    value = float(value)
    if not math.isfinite(value):
        raise _Failed(f"returned {value}, not a finite number")
    return value


@dataclass
class RewardScorer:
    reward: RewardRef
    timeout_s: float = 10.0
    on_error: OnRewardError = "stop"
    task_name: str = ""
    workers: int | None = None  # reward calls side by side (unset: the cores this process may use)
    pool: WorkerPool | None = field(default=None, repr=False)  # a user reward's children, if started already

    @classmethod
    def from_name(cls, name: str, **kwargs) -> "RewardScorer":
        """A built-in is imported here; a user reward only in its worker children, where it runs (a slow import
        is paid once, there, before the first step)."""
        spec = reward_spec(name)
        if spec in BUILTIN_REWARDS.values():
            return cls(resolve_reward(name), **kwargs)
        pool = WorkerPool(kwargs.get("workers"))
        try:
            status, outcome = pool.call("rewards.registry:inspect_reward_outcome", (spec,), IMPORT_TIMEOUT_S)
        except WorkerError as error:
            pool.close()
            raise RewardSpecError(f"reward {spec}: its worker could not import it ({error})") from None
        if status == "error":
            pool.close()
            raise RewardSpecError(outcome)
        return cls(RewardRef(spec, outcome, builtin=False), pool=pool, **kwargs)  # children holding the module

    def __post_init__(self) -> None:
        self.workers = self.workers or default_pool_size()
        self._pool = None if self.reward.builtin else (self.pool or WorkerPool(self.workers))
        self._function = None
        # User rewards and the MATH grader wait on child processes: worth a thread each. The other built-ins are
        # fast pure-Python regexes, for which threads would only add overhead.
        self._parallel = self.workers > 1 and (not self.reward.builtin or self.reward.spec == BUILTIN_REWARDS["math"])

    def score(self, completions: Sequence[str], samples: Sequence[Sample]) -> ScoredBatch:
        if len(completions) != len(samples):
            raise ValueError(f"{len(completions)} completions for {len(samples)} samples")
        if self.reward.style == "trl":
            outcomes = self._score_trl_batch(completions, samples)
        else:
            outcomes = self._score_each(completions, samples)
        rewards: list[float | None] = []
        failures: list[RewardFailure] = []
        answers: list[str | None] = []
        reads_answers = False
        for outcome, completion, sample in zip(outcomes, completions, samples):
            if isinstance(outcome, Graded):
                reads_answers = True
                outcome, answer = outcome.score, outcome.answer
            else:
                answer = None
            answers.append(answer)
            if isinstance(outcome, float):
                rewards.append(outcome)
                continue
            failure = RewardFailure(sample.id, completion, f"{self.reward.spec} {outcome}")
            if self.on_error == "stop":
                raise RewardError(failure)
            log.warning("%s (policy %s)", failure.describe(), self.on_error)
            failures.append(failure)
            rewards.append(0.0 if self.on_error == "zero" else None)
        return ScoredBatch(rewards, failures, answers=answers if reads_answers else None)

    def _score_each(self, completions: Sequence[str], samples: Sequence[Sample]) -> Iterator[float | str]:
        """Outcomes in order, produced lazily: with on_error=stop the first failure stops the batch (a hanging
        reward costs one timeout, not one per completion); calls not yet started are then cancelled."""
        if not self._parallel or len(completions) < 2:
            yield from (self._score_one(c, s) for c, s in zip(completions, samples))
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="reward")
        try:
            for future in [pool.submit(self._score_one, c, s) for c, s in zip(completions, samples)]:
                yield future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _call(self, args: tuple, kwargs: dict, timeout: float) -> Any:
        if self._pool is not None:
            return self._pool.call(self.reward.spec, args, timeout, kwargs)
        if self._function is None:
            # A built-in that can say what answer it read is called as its grader (same score, and the answer).
            module_name, _, attribute = GRADERS.get(self.reward.spec, self.reward.spec).partition(":")
            self._function = getattr(__import__(module_name, fromlist=[attribute]), attribute)
        return self._function(*args, **kwargs)

    def _score_one(self, completion: str, sample: Sample) -> float | Graded | str:
        if self.reward.style == "verl":
            # A verl-prepared row carries its own data_source and extra_info; other rows lend their columns.
            data_source = sample.metadata.get("data_source", self.task_name)
            extra_info = sample.metadata.get("extra_info")
            if not isinstance(extra_info, dict):
                extra_info = {**sample.metadata, "id": sample.id}
            args = (data_source, completion, sample.answer, extra_info)
        else:
            args = (completion, sample)
        try:
            return _as_reward(self._call(args, {}, self.timeout_s))
        except WorkerTimeout:
            return f"timed out after {self.timeout_s:g} s"
        except _Failed as e:
            return str(e)
        except WorkerError as e:
            return f"raised {e}"
        except Exception as e:  # a built-in grader's bug is reported like a user's
            return f"raised {type(e).__name__}: {e}"

    def _score_trl_batch(self, completions: Sequence[str], samples: Sequence[Sample]) -> list[float | Graded | str]:
        # As TRL calls it: everything by keyword, the dataset's other columns as lists (ours: the row's columns,
        # the answer and the id), and for chat prompts each completion as a list of messages.
        prompts = [s.prompt if isinstance(s.prompt, str) else [dict(m) for m in s.prompt] for s in samples]
        kwargs: dict[str, list] = {
            "prompts": prompts,
            "completions": [c if isinstance(p, str) else [{"role": "assistant", "content": c}]
                            for c, p in zip(completions, prompts)]}
        for key in sorted({k for s in samples for k in s.metadata}):
            kwargs.setdefault(key, [s.metadata.get(key) for s in samples])
        kwargs.setdefault("answer", [s.answer for s in samples])
        kwargs.setdefault("sample_id", [s.id for s in samples])
        try:
            values = self._call((), kwargs, self.timeout_s * len(samples))
        except WorkerTimeout:
            return [f"timed out after {self.timeout_s * len(samples):g} s (batch of {len(samples)})"] * len(samples)
        except WorkerError as e:
            return [f"raised {e}"] * len(samples)
        if not isinstance(values, (list, tuple)) or len(values) != len(samples):
            shape = f"{len(values)} values" if isinstance(values, (list, tuple)) else repr(values)
            return [f"returned {shape} for a batch of {len(samples)}"] * len(samples)
        outcomes: list[float | Graded | str] = []
        for value in values:
            try:
                outcomes.append(_as_reward(value))
            except _Failed as e:
                outcomes.append(str(e))
        return outcomes

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


class WeightedRewards:
    """Several rewards scored on the same completions; the reward is their weighted sum, and each one's values
    are kept (ScoredBatch.parts, logged as reward/<name>). A part that fails is reported under its own name and
    handled by its policy: with `skip` the completion has no reward, with `zero` that part counts 0."""

    def __init__(self, parts: list[tuple[str, float, RewardScorer]]):
        self.parts = parts

    def score(self, completions: Sequence[str], samples: Sequence[Sample]) -> ScoredBatch:
        scored = {name: scorer.score(completions, samples) for name, _, scorer in self.parts}
        totals: list[float | None] = []
        for index in range(len(completions)):
            values = [(weight, scored[name].rewards[index]) for name, weight, _ in self.parts]
            totals.append(None if any(v is None for _, v in values) else sum(w * v for w, v in values))
        # The answers are the first part's that reads any (a format reward beside gsm8k reads none).
        answers = next((batch.answers for batch in scored.values() if batch.answers is not None), None)
        return ScoredBatch(totals, [f for batch in scored.values() for f in batch.failures],
                           {name: batch.rewards for name, batch in scored.items()}, answers)

    def close(self) -> None:
        for _, _, scorer in self.parts:
            scorer.close()


def make_scorer(names: Sequence[str], weights: Sequence[float] | None = None,
                **kwargs) -> RewardScorer | WeightedRewards:
    """One reward, or several weighted (weights: default all 1). `kwargs`: each RewardScorer's options."""
    if weights is not None and len(weights) != len(names):
        raise RewardSpecError(f"{len(weights)} reward weights for {len(names)} rewards ({', '.join(names)}): give "
                              "one weight per reward")
    if len(set(names)) != len(names):
        raise RewardSpecError(f"a reward is named twice in {', '.join(names)}")
    bad = [w for w in weights or () if not math.isfinite(float(w))]
    if bad:  # NaN would make every reward NaN, and the run learn nothing while it looks alive
        raise RewardSpecError(f"reward weight {bad[0]} is not a finite number; give each reward a real weight")
    if len(names) == 1 and weights is None:
        return RewardScorer.from_name(names[0], **kwargs)
    scorers: list[tuple[str, float, RewardScorer]] = []
    try:
        for name, weight in zip(names, weights or [1.0] * len(names)):
            scorers.append((name, float(weight), RewardScorer.from_name(name, **kwargs)))
    except BaseException:
        for _, _, scorer in scorers:
            scorer.close()
        raise
    return WeightedRewards(scorers)
