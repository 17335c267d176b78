"""Task names to Tasks."""
from __future__ import annotations

from envs.arithmetic import ArithmeticSpec, arithmetic_task
from envs.gsm8k import gsm8k_task
from envs.math import math_task
from envs.task import Task
from rl_lora.config import TaskConfig


def load_task(config: TaskConfig) -> Task:
    if config.name == "arithmetic":
        spec = ArithmeticSpec(digits=config.digits, operators=config.operators, terms=config.terms,
                              train_size=config.train_size, test_size=config.test_size, seed=config.seed)
        if config.instruction is not None:
            spec = ArithmeticSpec(**{**spec.__dict__, "instruction": config.instruction})
        return arithmetic_task(spec)
    if config.name == "gsm8k":
        return gsm8k_task(config.path, config.instruction)
    return math_task(config.name, config.path, config.instruction)
