"""The `python` tool's runner: the model's code as a program in the sandbox (envs.sandbox), under its limits; what it
printed is returned (and the last line of an error, or which limit stopped it), cut to a length."""
from __future__ import annotations

from envs.sandbox import Limits, Outcome, Program, Sandbox

MAX_OUTPUT_CHARS = 4000
MAX_CODE_CHARS = 20_000
LIMITS = Limits()  # 5 s, 512 MB, 32 processes, 64 MB of /tmp, 64 kB of output


def cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n... ({len(text) - max_chars} more characters cut)"


def run_python(code: str, sandbox: Sandbox, limits: Limits = LIMITS, max_output_chars: int = MAX_OUTPUT_CHARS) -> str:
    """What the code printed; on an error, what it printed and then the error's last line; on a limit, which."""
    if not isinstance(code, str):
        return "error: the code must be a string"
    if len(code) > MAX_CODE_CHARS:
        return f"error: the code is longer than {MAX_CODE_CHARS} characters"
    outcome = sandbox.run(Program(code=code), limits)
    if outcome.ok:
        return cut(outcome.stdout, max_output_chars) if outcome.stdout else "(no output)"
    printed = cut(outcome.stdout, max_output_chars)  # the error line always survives the cut: it says what happened
    return f"{printed}{'' if not printed or printed.endswith(chr(10)) else chr(10)}error: {failure(outcome, limits)}"


def failure(outcome: Outcome, limits: Limits) -> str:
    """One line: which limit stopped the program, or the last line it wrote to stderr (its exception)."""
    if outcome.limit == "wall_time":
        return f"the code ran longer than {limits.wall_s:g} s and was stopped"
    if outcome.limit == "output":
        return f"the code printed more than {limits.output_bytes} bytes and was stopped"
    if outcome.limit == "cpu_time":
        return f"stopped by SIGXCPU (CPU time limit, {limits.cpu_s:g} s)"
    lines = outcome.stderr.strip().splitlines()
    last = lines[-1] if lines else (f"stopped by {outcome.signal}" if outcome.signal
                                    else f"exit status {outcome.exit_code}")
    if "MemoryError" in last:
        last += f" (the memory limit is {limits.memory_mb} MB)"
    return last
