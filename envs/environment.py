"""The environment protocol: an episode starts from a Sample and goes on, turn by turn, until the environment says
it is done. A plain single-turn task is its one-step case (SingleTurn), so every episode takes the same path.

    messages = env.reset(sample)            # the opening messages: system, user, ... (chat format)
    result = env.step(assistant_text)       # after each assistant turn
    result.messages                         # what the environment answers (tool results, a user turn), appended
    result.done, result.reward, result.stop_reason

The episode's reward is the sum of the per-turn rewards an environment gives (StepResult.reward), unless the task's
reward function scores the whole trajectory (then per-turn rewards are None). The caller keeps the trajectory as
token ids; an environment only sees and returns text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

from envs.sample import Sample

# Why an episode ended. The environment gives the first three; the episode runner the limits it enforces; a user
# environment that broke its contract under env.on_error=skip ends its episode with ENV_ERROR (scored 0).
DONE, PARSE_ERROR, TOOL_ERROR = "done", "parse_error", "tool_error"
MAX_TURNS, MAX_TOKENS, MAX_TOOL_CALLS = "max_turns", "max_tokens", "max_tool_calls"
ENV_ERROR = "env_error"
STOP_REASONS = (DONE, MAX_TURNS, MAX_TOKENS, MAX_TOOL_CALLS, PARSE_ERROR, TOOL_ERROR, ENV_ERROR)
ROLES = ("system", "user", "assistant", "tool")

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant" | "tool", "content": ...}


@dataclass(frozen=True)
class StepResult:
    messages: list[Message] = field(default_factory=list)  # appended after the assistant turn (empty when done)
    done: bool = False
    reward: float | None = None  # this turn's reward, if the environment gives one
    stop_reason: str | None = None  # when done: one of STOP_REASONS
    mask_turn: bool = False  # the assistant turn just taken carries no loss (env.on_parse_error=mask)
    tool_calls: int = 0  # tool calls the turn made
    tool_errors: int = 0  # ...of which ended in an error (the model was told which)


@runtime_checkable
class Environment(Protocol):
    """One episode's state. A new instance serves each episode (the runner builds one per trajectory)."""

    def reset(self, sample: Sample) -> list[Message]:
        """The episode's opening messages for this sample."""

    def step(self, assistant_text: str) -> StepResult:
        """The environment's answer to the assistant's turn."""


def prompt_messages(sample: Sample, system_prompt: str | None = None) -> list[Message]:
    """A sample's prompt as chat messages: a string becomes one user turn (after `system_prompt`, if any); chat
    messages are kept as given."""
    if isinstance(sample.prompt, str):
        messages = [{"role": "user", "content": sample.prompt}]
        return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + messages
    return [dict(m) for m in sample.prompt]


class SingleTurn:
    """Today's episode: the prompt, one completion, done. The task's reward scores the completion."""

    def __init__(self, system_prompt: str | None = None):
        self.system_prompt = system_prompt

    def reset(self, sample: Sample) -> list[Message]:
        return prompt_messages(sample, self.system_prompt)

    def step(self, assistant_text: str) -> StepResult:
        return StepResult(done=True, stop_reason=DONE)


def resolve_environment(spec: str) -> type:
    """`module:Class`, a user's environment: a class with reset(sample) and step(assistant_text), built once per
    episode with no arguments. A TaskError in one line otherwise."""
    import inspect

    from envs.errors import TaskError
    from envs.imports import import_named

    found = import_named(spec, f"env.name={spec}")
    missing = [name for name in ("reset", "step") if not callable(getattr(found, name, None))]
    if not inspect.isclass(found) or missing:
        what = "not a class" if not inspect.isclass(found) else f"it has no {' or '.join(missing)} method"
        raise TaskError(f"env.name={spec} is not an environment ({what}): write a class with reset(sample) -> "
                        "messages and step(assistant_text) -> envs.environment.StepResult")
    try:
        inspect.signature(found).bind()
    except TypeError:
        raise TaskError(f"env.name={spec}: its constructor needs arguments; rl-lora builds one per episode with "
                        "none") from None
    return found


class EnvironmentFault(Exception):
    """A user environment broke its contract (raised, or returned something that is not what the protocol says):
    one line naming the environment, the method, the sample and the cause."""


def _messages_problem(messages) -> str | None:
    """What is wrong with messages an environment returned (None: nothing)."""
    if not isinstance(messages, (list, tuple)):
        return f"returned {type(messages).__name__}, not a list of messages"
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            return f"message {index} is {type(message).__name__}, not a {{\"role\", \"content\"}} mapping"
        if message.get("role") not in ROLES:
            return f"message {index} has role {message.get('role')!r}; allowed: {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"message {index}'s content is {type(message.get('content')).__name__}, not text"
    return None


def _result_problem(result) -> str | None:
    """What is wrong with a StepResult an environment returned (None: nothing)."""
    if not isinstance(result, StepResult):
        return f"returned {type(result).__name__}, not an envs.environment.StepResult"
    reward = result.reward
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float))):
        return f"returned a reward of type {type(reward).__name__}, not a number"
    if reward is not None and not math.isfinite(reward):
        return f"returned a reward of {reward}, not a finite number"
    if result.stop_reason is not None and result.stop_reason not in STOP_REASONS:
        return f"returned stop_reason {result.stop_reason!r}; allowed: {', '.join(STOP_REASONS)}"
    return None if result.done else _messages_problem(result.messages)


class CheckedEnvironment:
    """A user's environment (env.name=module:Class) behind a checked boundary: its constructor, reset and step are
    called here, and an exception or a malformed return (a wrong type, content that is not text, a reward that is
    NaN) becomes one EnvironmentFault line naming `module:Class`, the method, the sample and the cause. With
    `skip` (env.on_error=skip) the fault is kept in `fault` instead and the episode ends at once (stop reason
    env_error), its trajectory worth 0."""

    def __init__(self, cls: type, spec: str, skip: bool = False):
        self.cls, self.spec, self.skip = cls, spec, skip
        self.env, self.sample_id, self.fault = None, None, None

    def reset(self, sample: Sample) -> list[Message]:
        self.sample_id = sample.id  # built here, where the sample is known, so that a failure can name it
        self.env = self._call("the constructor", self.cls, lambda env: None)
        if self.fault is None:
            messages = self._call("reset()", lambda: self.env.reset(sample), _messages_problem)
        return prompt_messages(sample) if self.fault else list(messages)  # skipped: the plain prompt, ended at once

    def step(self, assistant_text: str) -> StepResult:
        if self.fault is None:
            result = self._call("step()", lambda: self.env.step(assistant_text), _result_problem)
            if self.fault is None:
                return result
        return StepResult(done=True, reward=0.0, stop_reason=ENV_ERROR, mask_turn=True)

    def _call(self, method: str, call, problem_of):
        try:
            value = call()
        except Exception as error:  # the user's code: any exception is its fault, named; KeyboardInterrupt is not
            cause = f"raised {type(error).__name__}: {' '.join(str(error).split())[:200]}"
        else:
            cause = problem_of(value)
            if cause is None:
                return value
        line = f"environment {self.spec}: {method} on sample {self.sample_id!r} {cause}"
        if not self.skip:
            raise EnvironmentFault(f"{line} (env.on_error=stop; env.on_error=skip scores such episodes 0 and goes on)")
        self.fault = line
        return None
