"""Read task rows from a local jsonl/parquet file or a hub dataset, with errors that point at the bad row."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from envs.errors import TaskError

DATA_ENV_VAR = "RL_LORA_DATA"


# A row larger than this is no prompt any model's context holds; refusing it early keeps a stray 50 MB line from
# costing gigabytes downstream.
MAX_ROW_BYTES = 1 << 20


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if len(raw) > MAX_ROW_BYTES:
                raise TaskError(f"{path}:{line_no}: a row of {len(raw) / 1e6:.1f} MB; rows over "
                                f"{MAX_ROW_BYTES >> 20} MB are refused (no model's context holds such a prompt)")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TaskError(f"{path}:{line_no}: not UTF-8 text (a .jsonl file is text: one JSON object per "
                                "line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a bad file
        raise TaskError(f"{path}: cannot read parquet ({e})") from None


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise TaskError(f"data file not found: {path}")
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
    elif path.suffix == ".parquet":
        rows = read_parquet(path)
    else:
        raise TaskError(f"{path}: unsupported data file type {path.suffix!r} (use .jsonl or .parquet)")
    if not rows:
        raise TaskError(f"{path}: no rows (a split needs at least one problem)")
    return rows


def read_hub(name: str, split: str, config: str | None = None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise TaskError(f"loading {name!r} from the hub needs the `datasets` package") from None
    try:
        return list(datasets.load_dataset(name, config, split=split))
    except Exception as e:
        raise TaskError(f"cannot load hub dataset {name!r} split {split!r}: {e}") from None


def split_file(folder: Path, split: str) -> Path:
    """A task folder holds one file per split: `<split>.jsonl` or `<split>.parquet`."""
    for suffix in (".jsonl", ".parquet"):
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise TaskError(f"no {split}.jsonl or {split}.parquet in {folder}")


def local_task_folder(task_name: str, explicit_path: str | None) -> Path | None:
    """An explicit path wins; else $RL_LORA_DATA/<task>/ when that exists; else None (use the hub)."""
    if explicit_path:
        path = Path(explicit_path).expanduser()
        if not path.exists():
            raise TaskError(f"task.path does not exist: {path}")
        return path
    root = os.environ.get(DATA_ENV_VAR)
    if root and (Path(root) / task_name).is_dir():
        return Path(root) / task_name
    return None


def require_fields(rows: list[dict], fields: tuple[str, ...], source: str) -> Iterator[tuple[int, dict]]:
    for index, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise TaskError(f"{source}: row {index + 1} lacks field(s) {', '.join(missing)} (has: {', '.join(row)})")
        yield index, row
