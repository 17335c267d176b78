"""Files appear whole or not at all."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def out_of_space(error: BaseException, folder: Path) -> bool:
    """Whether `error` came from a full disk (or a file-size limit) under `folder`. Some writers (torch.save)
    report it as a RuntimeError with no errno; then a small probe write tells."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in OUT_OF_SPACE or "No space left" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * (1 << 20))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as probe_error:
        return probe_error.errno in OUT_OF_SPACE
    return False
