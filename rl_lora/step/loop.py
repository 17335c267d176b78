"""The driver loop. One RL step, top to bottom: sample a group per prompt, score it, compute advantages,
update the policy, hand the update to the sampler. Everything it calls has one job and lives elsewhere.

It knows a Sampler and a Learner (rl_lora.types), never how they run: in this process or as Ray actors."""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass
from statistics import mean, pstdev
from typing import Any, Callable

from envs.render import PromptRenderer
from envs.sample import Sample
from envs.task import Task
from rewards.protocol import Scorer
from rl_lora.config import RunConfig
from rl_lora.errors import UserError
from rl_lora.step.advantages import build_rollouts
from rl_lora.step.data_order import DataOrder
from rl_lora.step.dynamic_sampling import Drawn, fill_step
from rl_lora.step.evaluate import EvalResult, evaluate, sampled_eval
from rl_lora.types import Learner, Sampler, SamplingParams, StepMetrics, collate


@dataclass
class RunParts:
    """Everything a step touches, built once by the run setup (rl_lora.run.train)."""
    config: RunConfig
    task: Task
    renderer: PromptRenderer
    tokenizer: Any  # a transformers tokenizer; checkpoints of FullFT runs save it beside the weights
    learner: Learner
    sampler: Sampler
    scorer: Scorer  # for evaluation in this process (rollouts are scored where they are sampled)
    order: DataOrder
    pad_id: int


@dataclass
class PendingStep:
    """A step whose rollouts were submitted (with max_lag, while the learner still trains an earlier step)."""
    step: int
    samples: list[Sample]
    handle: Any  # the sampler's, for collect()
    data_position: int  # DataOrder position after this step's prompts: what a checkpoint after it records


def _submit(parts: RunParts, step: int, sampling_round: int = 0) -> tuple[list[Sample], Any]:
    """The next prompts_per_step prompts of the data order, submitted to the sampler."""
    config = parts.config
    samples = [parts.task.train[i] for i in parts.order.take(config.rollout.prompts_per_step)]
    # A fixed seed per step (and per extra round of dynamic sampling) makes a resumed run repeat itself.
    sampling = SamplingParams(config.rollout.temperature, config.rollout.max_new_tokens,
                              seed=config.train.seed * 100_003 + step + 1_000_003 * sampling_round)
    return samples, parts.sampler.submit([parts.renderer(s) for s in samples], samples, config.rollout.group_size,
                                         sampling)


def submit_step(parts: RunParts, step: int) -> PendingStep:
    samples, handle = _submit(parts, step)
    return PendingStep(step, samples, handle, parts.order.position)


def _draw_round(parts: RunParts, step: int, sampling_round: int) -> Drawn:
    samples, handle = _submit(parts, step, sampling_round)
    return Drawn(samples, parts.sampler.collect(handle))


def rl_step(parts: RunParts, pending: PendingStep, submit_ahead: Callable[[], None] = lambda: None) -> StepMetrics:
    config, step, samples, started = parts.config, pending.step, pending.samples, time.perf_counter()
    group_size = config.rollout.group_size

    sampled = parts.sampler.collect(pending.handle)
    filled = None
    if config.rollout.dynamic_sampling:  # DAPO: constant groups leave the step, more prompts replace them
        filled = fill_step(Drawn(samples, sampled), lambda sampling_round: _draw_round(parts, step, sampling_round),
                           config.rollout.prompts_per_step, group_size, config.rollout.max_sample_batches)
        samples, sampled = filled.samples, filled.sampled
        pending.data_position = parts.order.position  # max_lag is 0: the order moved only for this step's rounds
    collected = time.perf_counter()
    submit_ahead()  # max_lag > 0: the workers sample the next step(s) while the learner trains on this one
    completions = [c for group in sampled.groups for c in group]
    lag = parts.learner.version - min(c.version for c in completions)  # 0: strictly on-policy

    rollouts = build_rollouts([s.id for s in samples], sampled.groups, sampled.scored.rewards, config.algo.baseline,
                              config.algo.normalize_std, max_new_tokens=config.rollout.max_new_tokens,
                              overlong_buffer=config.reward.overlong_buffer,
                              overlong_factor=config.reward.overlong_penalty,
                              mask_truncated=config.algo.mask_truncated)
    if not rollouts and config.algo.mask_truncated and all(not c.finished for c in completions):
        raise UserError(f"step {step}: every completion reached rollout.max_new_tokens and algo.mask_truncated=true "
                        "drops them all: raise rollout.max_new_tokens, or set algo.mask_truncated=false")
    if not rollouts:
        raise UserError(f"step {step}: the reward failed on every completion (reward.on_error=skip); see the log")
    learned = parts.learner.step(collate(rollouts, parts.pad_id))
    learned_at = time.perf_counter()

    synced = parts.sampler.sync(parts.learner)

    rewards = [r.reward for r in rollouts]
    group_rewards = [[r for r in sampled.scored.rewards[i * group_size:(i + 1) * group_size] if r is not None]
                     for i in range(len(samples))]
    sampled_tokens = sum(len(c.token_ids) for c in completions)
    return StepMetrics(
        step=step,
        reward_mean=mean(rewards) if rewards else 0.0,
        reward_std=pstdev(rewards) if rewards else 0.0,
        zero_variance_groups=filled.zero_variance_groups if filled else
        sum(len(set(g)) <= 1 for g in group_rewards) / len(group_rewards),
        reward_failures=len(sampled.scored.failures),
        loss=learned.loss, grad_norm=learned.grad_norm, sampler_kl=learned.sampler_kl, base_kl=learned.base_kl,
        clip_fraction=learned.clip_fraction, entropy=learned.entropy,
        is_corrected_fraction=learned.is_corrected_fraction, learner_passes=learned.micro_batches,
        sample_batches=filled.batches if filled else 1,
        groups_drawn=filled.groups_drawn if filled else len(samples),
        groups_dropped=filled.groups_dropped if filled else 0,
        episode_turns=mean(c.turns for c in completions),
        tool_call_fraction=mean(c.tool_calls > 0 for c in completions),
        tool_ok_fraction=mean(c.tool_calls > 0 and c.tool_errors == 0 for c in completions),
        stop_reasons=dict(Counter(c.stop_reason or "done" for c in completions)),
        render_mismatch_fraction=mean(c.render_gap is not None for c in completions),
        completion_tokens_mean=sampled_tokens / len(completions),
        truncated_fraction=sum(not c.finished for c in completions) / len(completions),
        tokens_per_s=sampled_tokens / max(sampled.generate_s, 1e-9),
        lag=lag,
        time_generate=sampled.generate_s, time_score=sampled.score_s, time_wait=collected - started,
        time_learn=learned_at - collected, time_sync=synced.seconds, time_probe=synced.probe_seconds,
        time_step=time.perf_counter() - started,
        learning_rate=learned.learning_rate,
        sampler_version=min(c.version for c in completions), probe_gap=synced.probe_gap,
        worker_restarts=sampled.restarts,
        reward_parts={name: mean(scored) for name, values in sampled.scored.parts.items()
                      if (scored := [v for v in values if v is not None])} or None,
    )


def test_accuracy(parts: RunParts) -> EvalResult:
    samples = list(parts.task.test[: parts.config.train.eval_size])
    return evaluate(parts.sampler, [parts.renderer(s) for s in samples], samples, parts.scorer,
                    parts.config.eval.max_new_tokens, parts.config.eval.batch_size,
                    sampled=sampled_eval(parts.config.eval, parts.config.train.seed))


def train_loop(parts: RunParts, first_step: int, on_step: Callable[[StepMetrics], None],
               on_eval: Callable[[int, EvalResult], None], on_checkpoint: Callable[[int, int], None],
               stop_requested: Callable[[], bool]) -> int:
    """Run steps first_step..config.train.steps; returns the last completed step. on_checkpoint gets the step
    and the data position after it (with max_lag the order has already moved on to the steps sampled ahead)."""
    config, step = parts.config, first_step - 1
    pending: deque[PendingStep] = deque()
    next_to_submit = first_step

    def submit_through(last_step: int) -> None:
        nonlocal next_to_submit
        while next_to_submit <= min(last_step, config.train.steps):
            pending.append(submit_step(parts, next_to_submit))
            next_to_submit += 1

    for step in range(first_step, config.train.steps + 1):
        submit_through(step)
        current = pending.popleft()
        # max_lag = k: steps up to step + k are sampled before this one is learned from (k = 0: after the sync).
        metrics = rl_step(parts, current, lambda: submit_through(step + config.rollout.max_lag))
        last = step == config.train.steps
        if last or (config.train.eval_every and step % config.train.eval_every == 0):
            result = test_accuracy(parts)
            metrics = StepMetrics(**{**metrics.__dict__, "test_accuracy": result.accuracy,
                                     "test_sampled": result.sampled_summary() or None})
            on_eval(step, result)
        on_step(metrics)
        if last or step % config.train.checkpoint_every == 0 or stop_requested():
            on_checkpoint(step, current.data_position)
        if stop_requested():
            break
    return step
