"""GSM8K grade-school word problems: reference answer = the integer after `####`."""
from __future__ import annotations

from pathlib import Path

from envs.errors import TaskError
from envs.loading import local_task_folder, read_hub, read_rows, require_fields, split_file, where
from envs.sample import InstructedSamples, Sample
from envs.task import Task

HUB_NAME, HUB_CONFIG = "openai/gsm8k", "main"
DEFAULT_INSTRUCTION = "Solve the problem step by step, then give the final answer as: The answer is N."


def gsm8k_reference(solution: str, where: str) -> str:
    if "####" not in solution:
        raise TaskError(f"{where}: GSM8K answer has no '#### N' line")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def samples_from_rows(rows: list[dict], source: str, split: str, instruction: str) -> InstructedSamples:
    return InstructedSamples([
        Sample(
            id=f"gsm8k-{split}-{index}",
            prompt=row["question"].strip(),  # the instruction follows, joined when read (InstructedSamples)
            answer=gsm8k_reference(row["answer"], f"{source}: {where(rows, index)}"),
            metadata={"solution": row["answer"]},
        )
        for index, row in require_fields(rows, ("question", "answer"), source)
    ], instruction, "\n")


def _rows(folder: Path | None, split: str) -> tuple[list[dict], str]:
    if folder is None:
        return read_hub(HUB_NAME, split, HUB_CONFIG), f"{HUB_NAME}[{split}]"
    path = folder if folder.is_file() else split_file(folder, split)
    return read_rows(path), str(path)


def gsm8k_task(path: str | None, instruction: str | None) -> Task:
    folder = local_task_folder("gsm8k", path)
    instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    splits = {split: samples_from_rows(*_rows(folder, split), split, instruction) for split in ("train", "test")}
    return Task(name="gsm8k", train=splits["train"], test=splits["test"], reward="rewards.gsm8k:gsm8k_reward")
