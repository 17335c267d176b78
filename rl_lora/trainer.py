"""The driver loop. One RL step, top to bottom: sample a group per prompt, score it, compute advantages,
update the policy, hand the update to the sampler. Everything it calls has one job and lives elsewhere."""
from __future__ import annotations

import time
from dataclasses import dataclass
from statistics import mean, pstdev
from typing import Callable

from envs.render import PromptRenderer
from envs.task import Task
from rewards.scoring import RewardScorer
from rl_lora.config import RunConfig
from rl_lora.data_order import DataOrder
from rl_lora.errors import UserError
from rl_lora.evaluate import EvalResult, evaluate
from rl_lora.learner import Learner
from rl_lora.metrics import StepMetrics
from rl_lora.rollout.base import RolloutBackend, SamplingParams
from rl_lora.rollouts import build_rollouts
from rl_lora.types import collate


@dataclass
class RunParts:
    """Everything a step touches, built once by the run setup."""
    config: RunConfig
    task: Task
    renderer: PromptRenderer
    tokenizer: object
    scorer: RewardScorer
    learner: Learner
    backend: RolloutBackend
    order: DataOrder
    pad_id: int


def rl_step(parts: RunParts, step: int) -> StepMetrics:
    config, started = parts.config, time.perf_counter()
    samples = [parts.task.train[i] for i in parts.order.take(config.rollout.prompts_per_step)]
    prompts = [parts.renderer(s) for s in samples]
    group_size = config.rollout.group_size

    # Sample with the weights the sampler serves now; a fixed per-step seed makes a resumed run repeat itself.
    sampling = SamplingParams(config.rollout.temperature, config.rollout.max_new_tokens,
                              seed=config.train.seed * 100_003 + step)
    groups = parts.backend.generate(prompts, group_size, sampling)
    generated = time.perf_counter()
    completions = [c for group in groups for c in group]
    lag = parts.learner.version - min(c.version for c in completions)  # 0: strictly on-policy

    scored = parts.scorer.score([c.text for c in completions], [s for s in samples for _ in range(group_size)])
    scored_at = time.perf_counter()

    rollouts = build_rollouts([s.id for s in samples], groups, scored.rewards, config.algo.baseline,
                              config.algo.normalize_std)
    if not rollouts:
        raise UserError(f"step {step}: the reward failed on every completion (reward.on_error=skip); see the log")
    learned = parts.learner.step(collate(rollouts, parts.pad_id))
    learned_at = time.perf_counter()

    parts.backend.load_update(parts.learner.export_update())
    synced = time.perf_counter()

    rewards = [r.reward for r in rollouts]
    group_rewards = [[r for r in scored.rewards[i * group_size:(i + 1) * group_size] if r is not None]
                     for i in range(len(samples))]
    sampled_tokens = sum(len(c.token_ids) for c in completions)
    return StepMetrics(
        step=step,
        reward_mean=mean(rewards) if rewards else 0.0,
        reward_std=pstdev(rewards) if rewards else 0.0,
        zero_variance_groups=sum(len(set(g)) <= 1 for g in group_rewards) / len(group_rewards),
        reward_failures=len(scored.failures),
        loss=learned.loss, grad_norm=learned.grad_norm, sampler_kl=learned.sampler_kl, base_kl=learned.base_kl,
        clip_fraction=learned.clip_fraction, entropy=learned.entropy,
        completion_tokens_mean=sampled_tokens / len(completions),
        truncated_fraction=sum(not c.finished for c in completions) / len(completions),
        tokens_per_s=sampled_tokens / max(generated - started, 1e-9),
        lag=lag,
        time_generate=generated - started, time_score=scored_at - generated, time_learn=learned_at - scored_at,
        time_sync=synced - learned_at, time_step=synced - started,
        learning_rate=parts.learner.optimizer.param_groups[0]["lr"],
    )


def test_accuracy(parts: RunParts) -> EvalResult:
    samples = list(parts.task.test[: parts.config.train.eval_size])
    return evaluate(parts.backend, [parts.renderer(s) for s in samples], samples, parts.scorer,
                    parts.config.eval.max_new_tokens, parts.config.eval.batch_size)


def train_loop(parts: RunParts, first_step: int, on_step: Callable[[StepMetrics], None],
               on_eval: Callable[[int, EvalResult], None], on_checkpoint: Callable[[int], None],
               stop_requested: Callable[[], bool]) -> int:
    """Run steps first_step..config.train.steps; returns the last completed step."""
    config, step = parts.config, first_step - 1
    for step in range(first_step, config.train.steps + 1):
        metrics = rl_step(parts, step)
        last = step == config.train.steps
        if last or (config.train.eval_every and step % config.train.eval_every == 0):
            result = test_accuracy(parts)
            metrics = StepMetrics(**{**metrics.__dict__, "test_accuracy": result.accuracy})
            on_eval(step, result)
        on_step(metrics)
        if last or step % config.train.checkpoint_every == 0 or stop_requested():
            on_checkpoint(step)
        if stop_requested():
            break
    return step
