"""The child side of envs.workers: read (spec, args, kwargs), call, write (status, value), until EOF.

args=None only imports the function, so its import time is not charged to the first call."""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
import traceback

from envs.workers import read_message, write_message


def resolve(spec: str, cache: dict):
    if spec not in cache:
        module_name, _, attribute = spec.partition(":")
        cache[spec] = getattr(importlib.import_module(module_name), attribute)
    return cache[spec]


def die_with(parent: int, every_s: float = 0.5) -> None:
    """Exit once `parent` is gone (this process is re-parented): a reward that hangs must not outlive a trainer
    killed with -9, which never closes the pipe the main loop waits on."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def main() -> None:
    # Ctrl-C and SIGTERM belong to the parent, which stops after its current step and ends this process by closing
    # the pipe. Schedulers signal every process of a job (Slurm's scancel, `ray job stop`): a child that died of it
    # mid-call would fail the step the parent is finishing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=die_with, args=(os.getppid(),), daemon=True, name="die-with-parent").start()
    # Keep the protocol's stdout private: whatever the called code prints goes to stderr.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.fileno()
    cache: dict = {}
    while True:
        try:
            spec, args, kwargs = read_message(requests)
        except EOFError:
            return
        try:
            function = resolve(spec, cache)
            result = ("ok", None if args is None else function(*args, **kwargs))
        except BaseException as e:  # report everything, including SystemExit from user code
            last = traceback.extract_tb(e.__traceback__)[-1:]
            where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
            result = ("error", f"{type(e).__name__}: {e}{where}")
        write_message(channel, result)


if __name__ == "__main__":
    main()
