"""Process-wide tuning for the services and `mltrail run`: memory and CPU priority.

``keep_large_buffers``: glibc serves every allocation over a threshold (128
KiB at first) with its own ``mmap`` and gives it back with ``munmap``, and
trims freed heap memory from thread arenas with ``madvise``. Console output
moves through the agent and the collector in buffers of 256 KiB to 4 MiB, so
each buffer cost fresh zeroed pages from the kernel: page faults and page
clearing were a third of the agent's CPU in the console benchmark. Raising
both thresholds lets freed buffers be reused; memory kept in reserve is
bounded by ``TRIM_BYTES`` per arena.
"""

from __future__ import annotations

import ctypes
import os

from mltrail.common.settings import SettingsError

M_TRIM_THRESHOLD = -1   # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 8 * 1024 * 1024
TRIM_BYTES = 32 * 1024 * 1024


def keep_large_buffers() -> bool:
    """Set the thresholds; False where the C library has no ``mallopt`` (musl, macOS)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))


NICE_MAX = 19


def check_nice(nice: int) -> None:
    """The ``nice`` setting of the agent and the collector: 0 to NICE_MAX."""
    if not 0 <= nice <= NICE_MAX:
        raise SettingsError(f"nice must be between 0 and {NICE_MAX}: {nice}")


def lower_priority(nice: int) -> None:
    """Run this process ``nice`` steps below normal CPU priority (0 changes
    nothing; the value was checked with ``check_nice``).

    Call it before any thread starts: on Linux a thread's priority is its own,
    and new threads take their creator's. The embedded default runs its agent
    and collector at 10 so that, on a small machine, training comes first and
    recording catches up in the pauses (nothing is dropped: the spool waits).
    """
    if nice:
        os.nice(nice)
