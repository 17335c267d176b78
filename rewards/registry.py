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
    "code_tests": "rewards.code_tests:code_tests_reward",
    "code_tests_all": "rewards.code_tests:code_tests_all_reward",
}
# Built-ins whose grader also returns the answer it read (rewards.protocol.Graded): the same score, called in place
# of the reward where answers are counted (majority voting in a sampled evaluation).
GRADERS = {BUILTIN_REWARDS["gsm8k"]: "rewards.gsm8k:gsm8k_grade"}


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
    if names[:2] == ["prompts", "completions"] or names[:1] == ["completions"]:
        return "trl"  # called as TRL calls it: by keyword, with prompts, completions and the dataset's columns
    if names[:3] == ["data_source", "solution_str", "ground_truth"]:
        return "verl"
    try:
        signature.bind("completion", "sample")
    except TypeError:
        raise RewardSpecError(f"reward {spec} takes ({', '.join(names)}): expected (completion, sample), TRL's "
                              "(prompts, completions, **kwargs) or verl's (data_source, solution_str, ground_truth, "
                              "extra_info)") from None
    return "sample"


def reward_spec(name: str) -> str:
    """`module:function` for a built-in name or a spec, checked for shape only (nothing is imported)."""
    spec = BUILTIN_REWARDS.get(name, name)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise RewardSpecError(f"reward {name!r}: use a built-in ({', '.join(BUILTIN_REWARDS)}) or "
                              "package.module:function")
    # A console script does not put the working directory on sys.path; users expect `my_rewards:fn` to work.
    # (A worker child inherits this sys.path.)
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return spec


def inspect_reward(spec: str) -> RewardStyle:
    """Import the function and tell its style. Runs where the reward will run: in process for the built-ins, in
    the worker child for user rewards (so a slow user module is imported once, in the child)."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise RewardSpecError(f"reward {spec}: cannot import {module_name} ({type(e).__name__}: {e})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise RewardSpecError(f"reward {spec}: {module_name} has no callable {attribute!r}")
    return _style_of(function, spec)


def inspect_reward_outcome(spec: str) -> tuple[str, str]:
    """inspect_reward for a worker call: ("ok", style) or ("error", the one-line message)."""
    try:
        return "ok", inspect_reward(spec)
    except RewardSpecError as error:
        return "error", str(error)


def resolve_reward(name: str) -> RewardRef:
    """The reward, imported in this process."""
    spec = reward_spec(name)
    return RewardRef(spec=spec, style=inspect_reward(spec), builtin=spec in BUILTIN_REWARDS.values())
