"""Errors a user can fix: the CLI prints them as one line and exits non-zero, without a traceback."""
from envs.errors import TaskError
from rewards.protocol import RewardSpecError


class UserError(Exception):
    pass


# rl_lora's own, and those of the packages it builds on (which import nothing from rl_lora).
USER_ERRORS = (UserError, TaskError, RewardSpecError)


class RunStopped(RuntimeError):
    """A part of the run failed beyond recovery (the learner actor, a worker out of restarts): stop with the
    message, resumable from the last checkpoint."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM where there is nothing to finish first (before a run's first step): stop at once. The CLI
    exits with 128 + the signal's number, as a shell reports a process the signal killed."""

    def __init__(self, name: str, signum: int, when: str):
        super().__init__(f"{name} {when}")
        self.signum = signum


class StoppedAfterStep(KeyboardInterrupt):
    """A run that a signal stopped after a step, with its checkpoint written: resumable, not finished. The CLI
    prints the message and exits with 128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C), so a
    scheduler or a script can tell it from a finished run (0)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
