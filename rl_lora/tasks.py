"""The adapter between rl_lora's config and the two top-level packages it builds on: envs (tasks) and rewards
(scoring). Those take plain arguments and import nothing from rl_lora; this module maps config sections onto
them."""
from __future__ import annotations

from envs.arithmetic import ArithmeticSpec
from envs.registry import load_task as load_named_task
from envs.task import Task
from rewards.scoring import RewardScorer
from rl_lora.config import RewardConfig, TaskConfig


def load_task(config: TaskConfig) -> Task:
    arithmetic = ArithmeticSpec(digits=config.digits, operators=config.operators, terms=config.terms,
                                train_size=config.train_size, test_size=config.test_size, seed=config.seed)
    return load_named_task(config.name, config.path, config.instruction, arithmetic)


def reward_scorer(config: RewardConfig, task: Task) -> RewardScorer:
    """The configured reward, or the task's own grader when none is named."""
    return RewardScorer.from_name(config.name or task.reward, timeout_s=config.timeout_s, on_error=config.on_error,
                                  task_name=task.name)
