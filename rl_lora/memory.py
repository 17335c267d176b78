"""This process's memory: its peak RSS, and peaks measured from a point on."""
from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def start_peak() -> tuple[float, bool]:
    """(RSS now, whether the high-water mark could be reset to it). Without a reset, as off Linux, a tiny model's
    learner can stay under the peak that imports and data loading already set, and would read as 0 MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_mb("VmRSS"), True
    except OSError:
        return peak_rss_mb(), False


def peak_since(reset: bool) -> float:
    return _status_mb("VmHWM") if reset else peak_rss_mb()


# A learner on the CPU serves allocations of 4 MB or more from their own mappings (return_large_frees_to_the_os).
# At glibc's adaptive default the default run's RSS rose ~800 MB above the model within its first learner step, while
# its live tensors rose ~350 MB (memray): freed blocks (logits, 8-13 MB) stayed in the heap, split by smaller ones.
# Measured on the default run's first 3 steps (peak RSS; learner seconds per step): default 1,904 MB, 13.2-14.2 s;
# 4 MB 1,795 MB, 13.6-14.1 s; 1 MB 1,776 MB, 15.8-18.4 s; 128 kB 1,513 MB, but 23 s to learn a step (every
# activation mapped and faulted in afresh). benchmarks/README.md, "The default run's memory".
CPU_MMAP_THRESHOLD = 4 << 20


def return_large_frees_to_the_os(threshold_bytes: int) -> bool:
    """Serve allocations of `threshold_bytes` or more with their own mappings, which go back to the OS when freed
    (glibc's M_MMAP_THRESHOLD). glibc starts at 128 kB but raises the threshold to the size of each large block
    freed, up to 32 MB; a sharded learner then frees and reallocates every layer's gathered weights and gradients
    (~16 MB each for SmolLM2) from the heap, where they fragment: each of 2 FullFT ranks peaked at 1.50x one
    learner's memory at glibc's default, 0.71x with a 1 MB threshold (scripts/bench_learner_group.py:
    benchmarks/learner_group_glibc_default.json, learner_group.json). False where this is not glibc."""
    import ctypes
    import ctypes.util

    M_MMAP_THRESHOLD = -3
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False
