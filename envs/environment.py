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

from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

from envs.sample import Sample

# Why an episode ended. The environment gives the first three; the episode runner the limits it enforces.
DONE, PARSE_ERROR, TOOL_ERROR = "done", "parse_error", "tool_error"
MAX_TURNS, MAX_TOKENS, MAX_TOOL_CALLS = "max_turns", "max_tokens", "max_tool_calls"
STOP_REASONS = (DONE, MAX_TURNS, MAX_TOKENS, MAX_TOOL_CALLS, PARSE_ERROR, TOOL_ERROR)

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
