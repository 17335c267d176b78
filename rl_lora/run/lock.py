"""One writer per folder: an OS file lock (flock) on `<folder>/.lock`, held for the life of the process that writes
there (a run, or compare over its output folder). The kernel releases it when the process dies, however it dies,
so kill -9 never leaves a stale lock; the file itself stays behind and only says who held it last.

A second `train`, `train --resume` or `compare` on a held folder stops in one line naming the holder: its PID, host
and since when. Children inherit no lock: the descriptor is close-on-exec (Python's default).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from rl_lora.errors import UserError

LOCK_NAME = ".lock"
PATIENCE_S, PATIENCE_TRIES = 1.0, 20  # how long a busy lock is retried before the folder is called in use


class FolderLock:
    """Held from `acquire` until `release` or the process's end. `what` names the folder in the refusal ("run
    folder", "compare folder")."""

    def __init__(self, folder: Path, what: str = "run folder"):
        self.path, self.folder, self.what = Path(folder) / LOCK_NAME, Path(folder), what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, action: str = "", patient: bool = True) -> "FolderLock":
        """Take the lock, or raise UserError naming the holder. `action`: what the refused command would have done,
        for the line ("resume it", "train in it")."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise UserError(f"cannot lock {self.what} {self.folder}: {error.strerror}") from None
        tries = PATIENCE_TRIES if patient else 1
        for attempt in range(tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # holder_of takes the lock for an instant to look: wait that out before calling the folder busy.
                if attempt < tries - 1:
                    time.sleep(PATIENCE_S / PATIENCE_TRIES)
        else:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise UserError(f"{self.what} {self.folder} is in use by {holder}; "
                            + (f"cannot {action} " if action else "")
                            + "while it runs (stop it first, or wait for it to end)") from None
        # Who holds it, for the next one refused (written after locking: only the holder writes).
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process"  # it locked the file and has not written its record yet
    return f"PID {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}"


def holder_of(folder: Path) -> str | None:
    """Who holds `folder`'s lock now (None: nobody), without taking it for longer than a check."""
    lock = FolderLock(folder)
    if not lock.path.is_file():
        return None
    try:
        lock.acquire(patient=False)
    except UserError:
        fd = os.open(lock.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return _describe(_read_holder(fd))
        finally:
            os.close(fd)
    lock.release()
    return None
