"""Task names to Tasks, from plain arguments (rl_lora.tasks maps its config onto them)."""
from __future__ import annotations


from envs.arithmetic import ArithmeticSpec, arithmetic_task
from envs.dataset import DatasetSpec, dataset_task
from envs.errors import TaskError
from envs.gsm8k import gsm8k_task
from envs.humaneval import humaneval_task
from envs.imports import import_named
from envs.math import math_task
from envs.task import Task

TASK_NAMES = ("arithmetic", "gsm8k", "math", "math500", "dataset", "humaneval")
CODE_TASK = r"[A-Za-z_][\w.]*:[A-Za-z_]\w*"  # package.module:function, a Task factory


def load_task(name: str, path: str | None = None, instruction: str | None = None,
              arithmetic: ArithmeticSpec = ArithmeticSpec(), dataset: DatasetSpec = DatasetSpec()) -> Task:
    """`path`: local data (a file, or a folder of split files) or a hub id; `instruction`: the text after each
    problem (None: the task's own); `arithmetic`, `dataset`: those tasks' options. A `package.module:function`
    name calls that function, which returns the Task."""
    if ":" in name:
        return code_task(name)
    if name == "arithmetic":
        if instruction is not None:
            arithmetic = ArithmeticSpec(**{**arithmetic.__dict__, "instruction": instruction})
        return arithmetic_task(arithmetic)
    if name == "gsm8k":
        return gsm8k_task(path, instruction)
    if name == "dataset":
        return dataset_task(path, dataset)
    if name == "humaneval":
        return humaneval_task(instruction)
    return math_task(name, path, instruction)


def code_task(spec: str) -> Task:
    factory = import_named(spec, f"task {spec}")
    try:
        task = factory() if callable(factory) else factory
    except TypeError as e:  # it wants arguments: not a factory
        raise TaskError(f"task {spec}: not an envs.task.Task factory ({e}); a factory takes no arguments and "
                        "returns Task(name, train, test, reward)") from None
    if not isinstance(task, Task):
        raise TaskError(f"task {spec}: returned {type(task).__name__}, not an envs.task.Task (a Task factory "
                        "takes no arguments and returns Task(name, train, test, reward))")
    if not task.train or not task.test:
        raise TaskError(f"task {spec}: its train and test splits must each hold at least one Sample")
    return task
