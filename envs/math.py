"""MATH competition problems (Hendrycks et al.); MATH-500 is the usual evaluation subset of its test split."""
from __future__ import annotations

from pathlib import Path

from envs.errors import TaskError
from envs.loading import local_task_folder, read_hub, read_rows, require_fields, split_file, where
from envs.sample import InstructedSamples, Sample
from envs.task import Task

HUB_NAMES = {"math": "DigitalLearningGmbH/MATH-lighteval", "math500": "HuggingFaceH4/MATH-500"}
# Our local folder keeps MATH-500 beside MATH's splits, as math500_test.jsonl.
LOCAL_SPLIT_FILES = {("math", "train"): "train", ("math", "test"): "test",
                     ("math500", "train"): "train", ("math500", "test"): "math500_test"}
DEFAULT_INSTRUCTION = "Solve the problem, then put the final answer in \\boxed{}."


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in text, braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _reference(row: dict, where: str) -> str:
    if row.get("answer"):
        return str(row["answer"])
    boxed = last_boxed(row.get("solution", ""))
    if boxed is None:
        raise TaskError(f"{where}: MATH row has no 'answer' and its solution no \\boxed{{}}")
    return boxed


def _rows(task_name: str, folder: Path | None, split: str) -> tuple[list[dict], str]:
    if folder is None:
        hub_split = "test" if task_name == "math500" else split
        if task_name == "math500" and split == "train":
            return read_hub(HUB_NAMES["math"], "train"), f"{HUB_NAMES['math']}[train]"
        return read_hub(HUB_NAMES[task_name], hub_split), f"{HUB_NAMES[task_name]}[{hub_split}]"
    path = folder if folder.is_file() else split_file(folder, LOCAL_SPLIT_FILES[(task_name, split)])
    return read_rows(path), str(path)


def math_task(task_name: str, path: str | None, instruction: str | None) -> Task:
    folder = local_task_folder("math", path)
    instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    splits = {}
    for split in ("train", "test"):
        rows, source = _rows(task_name, folder, split)
        splits[split] = InstructedSamples([
            Sample(
                id=f"{task_name}-{split}-{row.get('unique_id', index)}",
                prompt=row["problem"].strip(),  # the instruction follows, joined when read (InstructedSamples)
                answer=_reference(row, f"{source}: {where(rows, index)}"),
                metadata={k: row[k] for k in ("subject", "level") if k in row},
            )
            for index, row in require_fields(rows, ("problem",), source)
        ], instruction, "\n")
    return Task(name=task_name, train=splits["train"], test=splits["test"], reward="rewards.math:math_reward")
