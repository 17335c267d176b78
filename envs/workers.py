"""The worker pool: call a trusted function (a user's reward or tool, math-verify) in a child process with a hard time
limit, from any thread or Ray actor.

This isolates faults, not attacks: a worker runs as the user, with the trainer's environment and files. Code the model
wrote never runs here; it runs in the sandbox (envs.sandbox).

Signal-based timeouts (math-verify's SIGALRM) only work in a process's main thread; a child process can always
be killed. The child is a plain `python -m envs._worker_main` (not multiprocessing), so it never
re-imports the caller's `__main__`, and it is reused across calls: one spawn per hang, not per call.
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

_HEADER = struct.Struct("!Q")
IMPORT_TIMEOUT_S = 120.0


class WorkerTimeout(Exception):
    pass


class WorkerError(Exception):
    """The function raised in the child; the message carries its type and text."""


class WorkerDied(WorkerError):
    """The child died during the call (killed for memory, say): like a timeout, the call gave no answer."""


def write_message(stream, payload: Any) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, remaining = [], size
    while remaining:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            raise WorkerTimeout()
        chunk = os.read(fd, remaining)
        if not chunk:
            raise EOFError("worker process exited")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, deadline: float | None = None) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


class Worker:
    """Runs `module:function` specs in one reusable child process. Thread-safe (calls are serialised)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._imported: set[str] = set()
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        # The child imports what the parent can: its sys.path, with "" (the working directory) made explicit.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path))
        return subprocess.Popen(
            [sys.executable, "-m", "envs._worker_main"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True,
        )

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def _ensure_imported(self, spec: str) -> None:
        if self._process is None or self._process.poll() is not None:
            self._process, self._imported = self._start(), set()
        if spec not in self._imported:
            # Starting the child and importing the function's module (sympy, say) is not the call: it gets its
            # own, generous budget so the first call is timed like every other.
            self._exchange((spec, None, None), IMPORT_TIMEOUT_S)
            self._imported.add(spec)

    def call(self, spec: str, args: tuple, timeout: float, kwargs: dict | None = None) -> Any:
        with self._lock:
            try:
                self._ensure_imported(spec)
                status, value = self._exchange((spec, args, kwargs or {}), timeout)
            except WorkerTimeout:
                self._kill()
                self.restarts += 1
                raise WorkerTimeout(f"{spec} did not return within {timeout:g} s") from None
            except (EOFError, BrokenPipeError):
                how = self._how_it_ended()
                self._kill()
                raise WorkerDied(f"{spec}: the worker process died during the call ({how})") from None
        if status == "error":
            raise WorkerError(value)
        return value

    def _how_it_ended(self) -> str:
        """Why the child is gone, from its exit status: the kernel's OOM killer sends SIGKILL, the most common way
        a reward dies (it built something huge)."""
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "it closed its pipe and is still running"
        if code >= 0:
            return f"it exited with code {code}"
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        if -code == signal.SIGKILL:
            return (f"killed by {name}: most often the kernel's out-of-memory killer, when the reward needs more "
                    "memory than the machine has")
        return f"killed by {name}"

    def _exchange(self, message: tuple, timeout: float) -> tuple[str, Any]:
        write_message(self._process.stdin, message)
        reply = read_message(self._process.stdout.fileno(), time.monotonic() + timeout)
        if message[1] is None and reply[0] == "error":
            raise WorkerError(reply[1])
        return reply

    def close(self) -> None:
        with self._lock:
            self._kill()

    def __del__(self) -> None:
        try:
            self._kill()
        except Exception:
            pass


def default_pool_size() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class WorkerPool:
    """Workers shared by threads: a call takes a free child, or starts one while fewer than `size` exist, so
    `size` calls run side by side (one scoring thread per core grades a batch that much faster). Each call keeps
    its own time limit; a hung or dead child is replaced without stalling the others."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size or default_pool_size()
        self._free: list[Worker] = []
        self._started = 0
        self._available = threading.Condition()

    def _take(self) -> Worker:
        with self._available:
            while not self._free and self._started >= self.size:
                self._available.wait()
            if self._free:
                return self._free.pop()
            self._started += 1
            return Worker()

    def _give_back(self, worker: Worker) -> None:
        with self._available:
            self._free.append(worker)
            self._available.notify()

    def call(self, spec: str, args: tuple, timeout: float, kwargs: dict | None = None) -> Any:
        worker = self._take()
        try:
            return worker.call(spec, args, timeout, kwargs)
        finally:
            self._give_back(worker)  # a timed-out child was killed; the worker starts a new one on next use

    def close(self) -> None:
        with self._available:
            for worker in self._free:
                worker.close()
