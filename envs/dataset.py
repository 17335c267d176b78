"""Any dataset of prompts: a local .jsonl / .json / .parquet file, a folder of split files, or a hub dataset id.
TRL's and verl's prepared formats load unchanged.

- The prompt: the first of `prompt`, `question`, `problem` (or `prompt_key`). A string, or a list of chat messages
  (`[{"role": ..., "content": ...}]`, rendered with the tokenizer's chat template as given).
- The reference: the first of `answer`, `solution`, `ground_truth`, verl's `reward_model.ground_truth` (or
  `answer_key`).
- Every column but the prompt travels in `Sample.metadata` (verl's `data_source` and `extra_info`, TRL's extra
  columns such as `solution`), where rewards read them.
- Splits: files named by split (`train.parquet`, `test.jsonl`, ...) or a hub split; with no test split, `test_size`
  rows are held out, the same ones on every run (seeded).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.errors import TaskError
from envs.loading import Rows, read_hub, read_rows, where
from envs.sample import Sample
from envs.task import Task

PROMPT_KEYS = ("prompt", "question", "problem")
ANSWER_KEYS = ("answer", "solution", "ground_truth", "reward_model.ground_truth")
SUFFIXES = (".parquet", ".jsonl", ".json")


# A .json file is read whole (it is one value): past this size, it should be .jsonl (read line by line, bounded).
MAX_JSON_FILE = 1 << 30


def _read(path: Path) -> Rows:
    if path.suffix != ".json":
        return read_rows(path)
    if path.stat().st_size > MAX_JSON_FILE:
        raise TaskError(f"{path}: {path.stat().st_size / 1e9:.1f} GB in one JSON value; over "
                        f"{MAX_JSON_FILE >> 30} GB, write it as .jsonl (one row per line)")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise TaskError(f"{path}: expected a JSON list of objects (one per row)")
    if not rows:
        raise TaskError(f"{path}: no rows (a split needs at least one problem)")
    return Rows(rows, unit="item")


def _split_file(folder: Path, split: str) -> Path | None:
    return next((folder / f"{split}{suffix}" for suffix in SUFFIXES if (folder / f"{split}{suffix}").is_file()), None)


def _get(row: dict, key: str) -> Any:
    """A column, or a nested field written with a dot (verl's `reward_model.ground_truth`)."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _pick(rows: list[dict], given: str | None, candidates: tuple[str, ...], what: str, key: str, source: str) -> str:
    if given is not None:
        if _get(rows[0], given) is None:
            raise TaskError(f"{source}: no {what} column {given!r} (columns: {', '.join(rows[0])})")
        return given
    found = next((k for k in candidates if _get(rows[0], k) is not None), None)
    if found is None:
        raise TaskError(f"{source}: no {what} column; looked for {', '.join(candidates)} (columns: "
                        f"{', '.join(rows[0])}); name yours with --set task.{key}=COLUMN")
    return found


def _prompt(value: Any, source: str, place: str) -> str | tuple[dict, ...]:
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # a numpy array, as parquet readers give lists
        value = value.tolist()
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        return tuple({"role": m["role"], "content": m["content"]} for m in value)
    raise TaskError(f"{source}, {place}: the prompt is neither a string nor a list of chat messages "
                    "({'role': ..., 'content': ...})")


def _samples(rows: list[dict], name: str, split: str, source: str, prompt_key: str | None,
             answer_key: str | None) -> list[Sample]:
    """`source` names the file (or hub split); errors add the split and the row's place in the file."""
    source = f"{source} ({split} split)"
    prompt_column = _pick(rows, prompt_key, PROMPT_KEYS, "prompt", "prompt_key", source)
    answer_column = _pick(rows, answer_key, ANSWER_KEYS, "answer", "answer_key", source)
    samples = []
    for index, row in enumerate(rows):
        answer = _get(row, answer_column)
        if answer is None:
            raise TaskError(f"{source}, {where(rows, index)}: no {answer_column!r}")
        metadata = {k: v for k, v in row.items() if k != prompt_column}
        samples.append(Sample(id=f"{name}-{split}-{index}", answer=str(answer), metadata=metadata,
                              prompt=_prompt(row.get(prompt_column), source, where(rows, index))))
    return samples


def _hold_out(rows: Rows, test_size: int, seed: int, source: str) -> tuple[Rows, Rows]:
    if len(rows) <= test_size:
        raise TaskError(f"{source}: {len(rows)} rows and no test split; holding out task.test_size={test_size} "
                        "would leave nothing to train on (lower task.test_size, or give a test split)")
    order = list(range(len(rows)))
    random.Random(f"hold-out-{seed}").shuffle(order)
    held = set(order[:test_size])
    return (rows.subset([i for i in range(len(rows)) if i not in held]),
            rows.subset([i for i in range(len(rows)) if i in held]))


@dataclass(frozen=True)
class DatasetSpec:
    prompt_key: str | None = None  # None: the first of PROMPT_KEYS the rows have
    answer_key: str | None = None  # None: the first of ANSWER_KEYS
    train_split: str = "train"
    test_split: str = "test"
    test_size: int = 200  # rows held out when there is no test split
    seed: int = 0
    # The grader when the config names none: math-verify's equivalence also reads plain numbers.
    reward: str = "rewards.math:math_reward"


def dataset_task(path: str | None, spec: DatasetSpec = DatasetSpec()) -> Task:
    prompt_key, answer_key, train_split, test_split = spec.prompt_key, spec.answer_key, spec.train_split, \
        spec.test_split
    test_size, seed = spec.test_size, spec.seed
    if not path:
        raise TaskError("task.name=dataset needs task.path: a .jsonl/.json/.parquet file, a folder of split files, "
                        "or a hub dataset id")
    local = Path(path).expanduser()
    name = local.stem if local.exists() else path.rstrip("/").rsplit("/", 1)[-1]
    if local.is_file():
        train, test = _hold_out(_read(local), test_size, seed, str(local))
        sources = (str(local), str(local))
    elif local.is_dir():
        train_file, test_file = _split_file(local, train_split), _split_file(local, test_split)
        if train_file is None:
            raise TaskError(f"no {train_split}.parquet / .jsonl / .json in {local}")
        train = _read(train_file)
        if test_file is not None:
            test = _read(test_file)
        else:
            train, test = _hold_out(train, test_size, seed, str(train_file))
        sources = (str(train_file), str(test_file or train_file))
    elif path.startswith((".", "/", "~")):
        raise TaskError(f"task.path does not exist: {local}")
    else:  # a hub dataset id
        train = read_hub(path, train_split)
        try:
            test = read_hub(path, test_split)
        except TaskError:
            train, test = _hold_out(train, test_size, seed, path)
        sources = (f"{path}[{train_split}]", f"{path}[{test_split}]")
    return Task(name=name, train=_samples(train, name, "train", sources[0], prompt_key, answer_key),
                test=_samples(test, name, "test", sources[1], prompt_key, answer_key), reward=spec.reward)
