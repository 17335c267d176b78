"""What a Ray failure was, in one line: the innermost error's type and message, not Ray's wrapper.

Ray wraps a remote exception in a RayTaskError (an actor's constructor failure, further, in an ActorDiedError)
whose first line is only "The actor died because of an error raised in its creation task"; the cause is inside.
"""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Errors whose message is the whole story (rl_lora's UserError, envs' TaskError, ...): their type name says nothing.
_MESSAGE_ONLY = ("UserError", "TaskError", "RewardSpecError", "RunStopped", "EnvironmentFault")


def innermost(error: BaseException) -> BaseException:
    """The original exception inside Ray's wrappers (ActorDiedError -> RayTaskError -> the cause)."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "cause", None)
        if isinstance(inner, BaseException):
            error = inner
            continue
        wrapped = [a for a in getattr(error, "args", ()) if isinstance(a, BaseException)]
        if wrapped:
            error = wrapped[0]
            continue
        break
    return error


def describe(error: BaseException) -> str:
    """'PermissionError: [Errno 13] Permission denied: '/cache/x'' for an error raised on a Ray worker. The
    remote traceback's last line for that type is preferred: it keeps details pickling loses (an OSError's
    file name)."""
    cause = innermost(error)
    name = type(cause).__name__.split("(")[0]
    text = _ANSI.sub("", str(error))
    lines = [line.strip() for line in text.splitlines()]
    remote = next((line for line in reversed(lines) if line.startswith(f"{name}: ")), None)
    if remote is None:
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        remote = f"{name}: {message}" if message else name
    if name in _MESSAGE_ONLY:
        remote = remote.removeprefix(f"{name}: ")
    return remote
