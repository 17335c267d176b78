"""Name a reward: a built-in name (`gsm8k`, `math`, `format`) or `package.module:function`."""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass

from rewards.protocol import RewardSpecError, RewardStyle

BUILTIN_REWARDS = {
    "gsm8k": "rewards.gsm8k:gsm8k_reward",
    "math": "rewards.math:math_reward",
    "format": "rewards.format:format_reward",
}


@dataclass(frozen=True)
class RewardRef:
    spec: str  # always `module:function`
    style: RewardStyle
    builtin: bool  # our own graders run in-process: bounded by construction (math bounds itself)


def _style_of(function, spec: str) -> RewardStyle:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some C callables have no signature: take them as (completion, sample)
        return "sample"
    names = list(signature.parameters)
    if names[:2] == ["prompts", "completions"]:
        return "trl"
    if names[:3] == ["data_source", "solution_str", "ground_truth"]:
        return "verl"
    try:
        signature.bind("completion", "sample")
    except TypeError:
        raise RewardSpecError(f"reward {spec} takes ({', '.join(names)}): expected (completion, sample), TRL's "
                              "(prompts, completions, **kwargs) or verl's (data_source, solution_str, ground_truth, "
                              "extra_info)") from None
    return "sample"


def resolve_reward(name: str) -> RewardRef:
    spec = BUILTIN_REWARDS.get(name, name)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise RewardSpecError(f"reward {name!r}: use a built-in ({', '.join(BUILTIN_REWARDS)}) or package.module:function")
    # A console script does not put the working directory on sys.path; users expect `my_rewards:fn` to work.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise RewardSpecError(f"reward {spec}: cannot import {module_name} ({type(e).__name__}: {e})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise RewardSpecError(f"reward {spec}: {module_name} has no callable {attribute!r}")
    return RewardRef(spec=spec, style=_style_of(function, spec), builtin=spec in BUILTIN_REWARDS.values())
