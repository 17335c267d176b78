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


class Rows(list):
    """Rows as read, each with its place in its source, for errors a user can look up: the file's line (jsonl,
    blank lines counted), the row (parquet, hub) or the item (a JSON list), 1-based. A split taken out of a file
    (held-out rows) keeps each row's place in the file."""

    def __init__(self, rows=(), places: list[int] | None = None, unit: str = "row"):
        super().__init__(rows)
        self.places = list(places) if places is not None else list(range(1, len(self) + 1))
        self.unit = unit

    def subset(self, indices: list[int]) -> "Rows":
        return Rows([self[i] for i in indices], [self.places[i] for i in indices], self.unit)


def where(rows: list[dict], index: int) -> str:
    """'line 6' for the row at `index` (0-based) of `rows`: its place in its file, where Rows knows it."""
    if isinstance(rows, Rows):
        return f"{rows.unit} {rows.places[index]}"
    return f"row {index + 1}"


def read_jsonl(path: Path) -> Rows:
    rows, lines = [], []
    with open(path, "rb") as f:
        line_no = 0
        while True:
            # Bounded: a line past the limit is refused having read only the limit (a 2 GB line with no newline
            # costs 1 MB of memory, not 2 GB).
            raw = f.readline(MAX_ROW_BYTES + 1)
            if not raw:
                break
            line_no += 1
            if len(raw) > MAX_ROW_BYTES:
                raise TaskError(f"{path}:{line_no}: a row of more than {MAX_ROW_BYTES >> 20} MB; rows over "
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
            lines.append(line_no)
    return Rows(rows, lines, "line")


def read_parquet(path: Path) -> Rows:
    import pyarrow.parquet as pq

    try:
        return Rows(pq.read_table(path).to_pylist())
    except Exception as e:  # pyarrow raises several types for a bad file
        raise TaskError(f"{path}: cannot read parquet ({e})") from None


def read_rows(path: Path) -> Rows:
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


def read_hub(name: str, split: str, config: str | None = None) -> Rows:
    try:
        import datasets
    except ImportError:
        raise TaskError(f"loading {name!r} from the hub needs the `datasets` package") from None
    try:
        return Rows(datasets.load_dataset(name, config, split=split))
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
            raise TaskError(f"{source}: {where(rows, index)} lacks field(s) {', '.join(missing)} (has: "
                            f"{', '.join(row)})")
        yield index, row
