"""The `python` tool's runner: the model's code in a fresh `python -I` child with a time limit, an address-space
limit and a CPU-time limit, its stdout (and the last line of an error) returned, cut to a length.

The child is isolated from the caller (-I: no user site, no PYTHONPATH, no current directory on the path), runs in
an empty temporary directory, and is killed with its whole process group when time is up, so a fork bomb or a
sleeping grandchild does not outlive the call.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile

TIME_LIMIT_S = 5.0
MEMORY_LIMIT_MB = 512
MAX_OUTPUT_CHARS = 4000
MAX_CODE_CHARS = 20_000


def _limits(memory_mb: int, cpu_s: float):
    def apply() -> None:
        os.setsid()  # its own process group: killed as a whole
        size = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
        seconds = max(1, int(cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # files it writes: 1 MB at most
    return apply


def cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n... ({len(text) - max_chars} more characters cut)"


def run_python(code: str, time_limit_s: float = TIME_LIMIT_S, memory_mb: int = MEMORY_LIMIT_MB,
               max_output_chars: int = MAX_OUTPUT_CHARS) -> str:
    """What the code printed; on an error, what it printed and then the error's last line; on a limit, which."""
    if not isinstance(code, str):
        return "error: the code must be a string"
    if len(code) > MAX_CODE_CHARS:
        return f"error: the code is longer than {MAX_CODE_CHARS} characters"
    with tempfile.TemporaryDirectory(prefix="rl-lora-python-") as folder:
        child = subprocess.Popen([sys.executable, "-I", "-c", code], cwd=folder, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PYTHONIOENCODING": "utf-8"},
                                 preexec_fn=_limits(memory_mb, time_limit_s))
        try:
            out, err = child.communicate(timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return f"error: the code ran longer than {time_limit_s:g} s and was stopped"
        finally:
            try:
                os.killpg(child.pid, signal.SIGKILL)  # anything it left behind in its group
            except ProcessLookupError:
                pass
    stdout = out.decode("utf-8", "replace")
    if child.returncode == 0:
        return cut(stdout, max_output_chars) if stdout else "(no output)"
    lines = err.decode("utf-8", "replace").strip().splitlines()
    last = lines[-1] if lines else ""
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name if -child.returncode in signal.Signals._value2member_map_ \
            else f"signal {-child.returncode}"
        last = f"stopped by {name} (CPU time limit)" if -child.returncode == signal.SIGXCPU else f"stopped by {name}"
    if "MemoryError" in last or (not last and child.returncode == 1):
        last = last or "MemoryError"
        last += f" (the memory limit is {memory_mb} MB)"
    return cut(stdout + f"error: {last}", max_output_chars)
