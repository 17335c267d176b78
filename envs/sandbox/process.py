"""Run one child process under a wall-time limit, reading its stdout and stderr as they come and keeping at most
`output_bytes` of them: a program that prints forever costs a bounded buffer and is stopped, never read whole."""
from __future__ import annotations

import os
import resource
import selectors
import signal
import subprocess
import time
from typing import Callable, Optional, Sequence

from envs.sandbox.protocol import Limits, Outcome

def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_bounded(argv: Sequence[str], limits: Limits, *, env: dict, cwd: Optional[str] = None, stdin: bytes = b"",
                preexec_fn: Optional[Callable[[], None]] = None, pass_fds: Sequence[int] = (),
                status_of: Callable[[int], tuple[Optional[int], Optional[str]]] = None) -> Outcome:
    """`status_of` turns the child's return code into (exit code, signal name): a wrapper such as bwrap reports a
    signalled program as 128 + n."""
    child = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                             preexec_fn=preexec_fn, pass_fds=tuple(pass_fds))
    if stdin:
        try:  # a program that never reads its input must not block us: written once, in the pipe's buffer's size
            os.set_blocking(child.stdin.fileno(), False)
            os.write(child.stdin.fileno(), stdin[:65536])
        except (BrokenPipeError, BlockingIOError):
            pass
        child.stdin.close()
    kept = {"stdout": bytearray(), "stderr": bytearray()}
    limit, cut = None, False
    deadline = time.monotonic() + limits.wall_s
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ, "stdout")
        selector.register(child.stderr, selectors.EVENT_READ, "stderr")
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                limit = "wall_time"
                break
            for key, _ in selector.select(timeout=min(left, 0.5)):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                room = limits.output_bytes - len(kept["stdout"]) - len(kept["stderr"])
                kept[key.data] += chunk[:max(room, 0)]
                if len(chunk) > room:
                    limit, cut = "output", True
            if limit:
                break
            if child.poll() is not None and not selector.select(timeout=0):
                break  # it ended; a grandchild holding the pipes open must not hold the call
    _kill_group(child)
    code = child.wait()
    child.stdout.close()
    child.stderr.close()
    exit_code, signal_ = (status_of or _plain_status)(code)
    if limit is None and signal_ == "SIGXCPU":
        limit = "cpu_time"
    if limit is not None:
        exit_code = None
    return Outcome(kept["stdout"].decode("utf-8", "replace"), kept["stderr"].decode("utf-8", "replace"),
                   exit_code, limit, signal_, cut)


def set_rlimits(limits: Limits) -> None:
    """In the child before exec: CPU (SIGXCPU first, so the Outcome can say cpu_time), address space, open files,
    file size, no core dumps. Inherited by everything it starts, and it cannot raise them (no CAP_SYS_RESOURCE)."""
    cpu = max(1, int(limits.cpu_s + 0.999))
    for kind, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1),
                             (resource.RLIMIT_AS, limits.memory_mb << 20, limits.memory_mb << 20),
                             (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
                             (resource.RLIMIT_FSIZE, limits.file_mb << 20, limits.file_mb << 20),
                             (resource.RLIMIT_CORE, 0, 0)):
        resource.setrlimit(kind, (soft, hard))


def _plain_status(code: int) -> tuple[Optional[int], Optional[str]]:
    return (code, None) if code >= 0 else (None, signal_name(-code))


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
