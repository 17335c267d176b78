"""Task names to Tasks, from plain arguments (rl_lora.tasks maps its config onto them)."""
from __future__ import annotations

from envs.arithmetic import ArithmeticSpec, arithmetic_task
from envs.gsm8k import gsm8k_task
from envs.math import math_task
from envs.task import Task

TASK_NAMES = ("arithmetic", "gsm8k", "math", "math500")


def load_task(name: str, path: str | None = None, instruction: str | None = None,
              arithmetic: ArithmeticSpec = ArithmeticSpec()) -> Task:
    """`path`: local data (a file, or a folder of <split>.jsonl|parquet); `instruction`: the text after each
    problem (None: the task's own); `arithmetic`: the generated task's options (its instruction is replaced by
    `instruction` when given)."""
    if name == "arithmetic":
        if instruction is not None:
            arithmetic = ArithmeticSpec(**{**arithmetic.__dict__, "instruction": instruction})
        return arithmetic_task(arithmetic)
    if name == "gsm8k":
        return gsm8k_task(path, instruction)
    return math_task(name, path, instruction)
