"""The child side of rewards.sandbox: read (spec, args, kwargs), call, write (status, value), until EOF.

args=None only imports the function, so its import time is not charged to the first call."""
from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback

from rewards.sandbox import read_message, write_message


def resolve(spec: str, cache: dict):
    if spec not in cache:
        module_name, _, attribute = spec.partition(":")
        cache[spec] = getattr(importlib.import_module(module_name), attribute)
    return cache[spec]


def main() -> None:
    # Ctrl-C belongs to the parent; it ends this process by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
