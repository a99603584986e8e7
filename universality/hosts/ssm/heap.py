"""Keep freed tensor memory in the process heap during CPU training loops (glibc only).

glibc hands every allocation above its mmap threshold (at most 32 MiB by default)
straight to the kernel and returns it on free, and trims the heap top back to the
kernel as well. A CPU training step that allocates the same large buffers every
time (a [16, 256, 4096] float32 logits tensor and its gradient are 64 MiB each)
then pays a page fault and a page zeroing per 4 KiB, every step: ~58,000 faults
and ~0.1 CPU-second per step for the issue-2 Mamba benchmark, about a tenth of it.
Inside :func:`retained_heap` such buffers come from, and go back to, the heap.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT = 128 * 1024  # both parameters' glibc defaults


def _mallopt():
    """glibc's ``mallopt`` or ``None`` (another C library, or not Linux)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


@contextmanager
def retained_heap(limit_bytes: int = 1 << 30) -> Iterator[bool]:
    """Within the block, allocations up to ``limit_bytes`` come from the heap and freed memory stays there.

    Yields whether the setting took effect (``False`` off glibc, where nothing changes).
    On exit both thresholds are set back to glibc's defaults (128 KiB), which also
    ends glibc's own adaptive raising of them; memory already kept stays with the
    process until it is reused.
    """
    mallopt = _mallopt()
    limit = int(min(max(limit_bytes, _GLIBC_DEFAULT), 2**31 - 1))
    applied = bool(mallopt and mallopt(_M_MMAP_THRESHOLD, limit) and mallopt(_M_TRIM_THRESHOLD, limit))
    try:
        yield applied
    finally:
        if mallopt:
            mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT)
            mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT)
