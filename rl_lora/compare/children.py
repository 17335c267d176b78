"""compare's child processes (each arm's run, a shared engine's runs, a learner measurement), tied to compare:

- each child leads its own process group, so compare can signal it and everything it started at once;
- the kernel sends it SIGTERM when compare dies, however compare dies (Linux's parent-death signal): kill -9 on
  compare leaves nothing training beside a re-run (a run stops at once before its first step, else after its step
  with a checkpoint);
- Ctrl-C or SIGTERM to compare is passed to the child's group: the run stops after its step, then compare stops.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _tie_to(parent: int):
    """Runs in the child between fork and exec: ask for SIGTERM when the parent dies, then check the parent did not
    die already (before the request, which would leave the child adopted by init with no signal coming)."""
    def setup() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return setup


@dataclass(frozen=True)
class ChildEnd:
    code: int
    stopped_by: int | None  # the signal compare received and passed on while the child ran (None: none)
    stdout: str | None = None  # with capture=True
    stderr: str | None = None


def run_tied(argv: list[str], capture: bool = False) -> ChildEnd:
    """`python -m rl_lora.cli ARGV` in its own process group, tied to this process; returns when it ends."""
    stopped: list[int] = []

    def pass_on(signum, frame) -> None:
        stopped.append(signum)
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"[compare] {name}: passed to the running child; compare stops when it ends"
              + (" (again: it aborts)" if len(stopped) == 1 else ""), file=sys.stderr, flush=True)
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    pipe = subprocess.PIPE if capture else None
    child = subprocess.Popen([sys.executable, "-m", "rl_lora.cli", *argv], stdout=pipe, stderr=pipe, text=capture,
                             start_new_session=True, preexec_fn=_tie_to(os.getpid()))
    previous = {signum: signal.signal(signum, pass_on) for signum in STOP_SIGNALS}
    try:
        out, err = child.communicate()
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)  # this process is failing: leave nothing behind
        child.wait()
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return ChildEnd(child.returncode, stopped[0] if stopped else None, out, err)
