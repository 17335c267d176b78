"""The sandbox: where code the model wrote runs (the `python` tool, the `code_tests` reward).

A policy optimises whatever its environment lets it do, so its code is treated like a request from the internet: it
runs behind a boundary that isolates an adversary, not only a mistake. The seam is small (Sandbox.run a Program under
Limits, get an Outcome); the backends are chosen by name (`env.sandbox`):

- `bwrap` (the default): Linux namespaces through bubblewrap, no root and no Docker (envs.sandbox.bwrap);
- `none`: a plain child process with rlimits, as the user, only when named (envs.sandbox.unisolated);
- `module:factory`: a user's backend (a container service, a remote sandbox) behind the same protocol.

Trusted code (a user's reward or tool) runs in the worker pool (envs.workers), which isolates faults, not attacks.
"""
from __future__ import annotations

import re
from typing import Sequence

from envs.errors import TaskError
from envs.imports import import_named
from envs.sandbox.protocol import Limits, Outcome, Program, Sandbox, SandboxUnavailable

__all__ = ["Limits", "Outcome", "Program", "Sandbox", "SandboxUnavailable", "open_sandbox", "BACKENDS"]

BACKENDS = ("bwrap", "none")
FACTORY = r"[A-Za-z_][\w.]*:[A-Za-z_]\w*"


def check_sandbox_name(name: str) -> None:
    if name not in BACKENDS and not re.fullmatch(FACTORY, name):
        raise TaskError(f"env.sandbox={name!r}: use bwrap (Linux namespaces, the default), none (no isolation: model-"
                        "written code runs as you) or module:factory (your own backend)")


def open_sandbox(name: str, python_packages: Sequence[str] = ()) -> Sandbox:
    """The backend `name` names, checked: it can isolate (SandboxUnavailable with the cause if not; never a silent
    fallback to another backend), or it is `none`, asked for by name."""
    check_sandbox_name(name)
    packages = tuple(python_packages)
    if name == "bwrap":
        from envs.sandbox.bwrap import BwrapSandbox

        sandbox: Sandbox = BwrapSandbox(packages)
    elif name == "none":
        from envs.sandbox.unisolated import UnisolatedSandbox

        sandbox = UnisolatedSandbox()
    else:
        factory = import_named(name, f"env.sandbox: {name}")
        try:
            sandbox = factory(python_packages=packages)
        except Exception as error:
            raise SandboxUnavailable(f"env.sandbox={name}: the factory failed ({type(error).__name__}: {error})") \
                from None
        missing = [m for m in ("run", "check", "close") if not callable(getattr(sandbox, m, None))]
        if missing or not isinstance(getattr(sandbox, "isolated", None), bool):
            raise SandboxUnavailable(f"env.sandbox={name}: the factory returned {type(sandbox).__name__}, not a "
                                     "Sandbox (envs.sandbox.protocol: run, check, close and an `isolated` flag)")
    sandbox.check()
    return sandbox
