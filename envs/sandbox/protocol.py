"""The sandbox seam: a Program, the Limits it runs under, the Outcome it leaves, and the Sandbox that runs it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol, runtime_checkable


class SandboxUnavailable(RuntimeError):
    """The backend cannot isolate here (no user namespaces, no bwrap, a factory that fails): the run refuses, in one
    line naming the cause and env.sandbox."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0  # from start to end, start-up included
    cpu_s: float = 5.0  # per process
    memory_mb: int = 512  # address space per process
    processes: int = 32  # alive at once inside the sandbox
    open_files: int = 64  # per process
    file_mb: int = 16  # the largest file it may write
    tmp_mb: int = 64  # the private writable /tmp (its working folder), all files together
    output_bytes: int = 64 * 1024  # stdout and stderr together; past it the program is stopped, and what came is kept


@dataclass(frozen=True)
class Program:
    """Python source (`code`, run as __main__ by the sandbox's interpreter) or a command (`argv`), with `files`
    (name -> text or bytes) written into its working folder first and `stdin` fed to it."""
    code: Optional[str] = None
    argv: tuple[str, ...] = ()
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    stdin: bytes = b""

    def __post_init__(self) -> None:
        if (self.code is None) == (not self.argv):
            raise ValueError("a Program is either code or argv")
        bad = [n for n in self.files if not n or "/" in n or n in (".", "..") or "\0" in n]
        if bad:
            raise ValueError(f"file names must be plain names inside the working folder, got {bad[0]!r}")


@dataclass(frozen=True)
class Outcome:
    stdout: str
    stderr: str
    exit_code: Optional[int]  # the program's status; None when a limit stopped it
    limit: Optional[str] = None  # which limit stopped it: wall_time, cpu_time, memory, output, or None
    signal: Optional[str] = None  # the signal that ended it (SIGKILL, SIGXCPU, ...), when one did
    output_cut: bool = False  # more output came than was kept

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit is None


@runtime_checkable
class Sandbox(Protocol):
    """Runs model-written programs. `isolated` is False only for the `none` backend, which the run announces.
    check() raises SandboxUnavailable when the boundary cannot be made here; run() never raises for anything the
    program does (its failures are in the Outcome); close() frees what the backend holds."""
    name: str
    isolated: bool

    def check(self) -> None: ...

    def run(self, program: Program, limits: Limits = Limits()) -> Outcome: ...

    def close(self) -> None: ...
