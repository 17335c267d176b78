"""Errors a user can fix: the CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    pass


class RunStopped(RuntimeError):
    """A part of the run failed beyond recovery (the learner actor, a worker out of restarts): stop with the
    message, resumable from the last checkpoint."""
