"""The sandbox a process's rewards share. Built-in rewards are plain `(completion, sample)` functions, so the one
that runs model-written code (rewards.code_tests) takes its sandbox from here: the run names it once
(configure(env.sandbox, env.python_packages), in the trainer and in each Ray rollout worker) and it opens on first
use; unconfigured, it is the default, bwrap. Opening fails closed (SandboxUnavailable), as everywhere."""
from __future__ import annotations

import threading
from typing import Optional, Sequence

from envs.sandbox import Sandbox, open_sandbox

_lock = threading.Lock()
_settings: tuple[str, tuple[str, ...]] = ("bwrap", ())
_opened: Optional[Sandbox] = None


def configure(name: str, python_packages: Sequence[str] = ()) -> None:
    global _settings, _opened
    with _lock:
        settings = (name, tuple(python_packages))
        if settings != _settings and _opened is not None:
            _opened.close()
            _opened = None
        _settings = settings


def shared_sandbox() -> Sandbox:
    global _opened
    with _lock:
        if _opened is None:
            _opened = open_sandbox(*_settings)
        return _opened
