"""Keep freed tensor memory in the process heap during CPU training loops (glibc only).

glibc hands every allocation above its mmap threshold (at most 32 MiB by default)
straight to the kernel and returns it on free, and trims the heap top back to the
kernel as well. A CPU training step that allocates the same large buffers every
time (a [16, 256, 4096] float32 logits tensor and its gradient are 64 MiB each)
then pays a page fault and a page zeroing per 4 KiB, every step: ~58,000 faults
and ~0.1 CPU-second per step for the issue-2 Mamba benchmark, about a tenth of it.
Inside :func:`retained_heap` such buffers come from, and go back to, the heap.
:func:`hugepage_empty` is the local remedy for one buffer: it asks for transparent huge pages,
so writing it faults once per 2 MiB (the hosts use it for their logits).
"""

from __future__ import annotations

import ctypes
import functools
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch

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


_MADV_HUGEPAGE = 14  # from Linux's mman-common.h
_HUGE = 2 * 1024 * 1024
_HUGE_MIN_BYTES = 32 * 1024 * 1024  # glibc maps requests this large on their own (never heap memory)


@functools.cache
def _madvise():
    """Linux's ``madvise`` or ``None``."""
    if platform.system() != "Linux":
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


def hugepage_empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised CPU tensor of ``shape`` whose memory is advised to use transparent huge pages.

    For a buffer of 32 MiB or more (which glibc maps on its own and unmaps on free) the
    2 MiB-aligned interior is passed to ``madvise(MADV_HUGEPAGE)`` before anything touches it,
    so writing it takes one page fault per 2 MiB instead of one per 4 KiB (a [16, 256, 4096]
    float32 logits tensor: ~550 faults instead of ~16,400). Smaller buffers, other systems, or
    a kernel with transparent huge pages off: a plain ``torch.empty``.
    """
    out = torch.empty(*shape, dtype=dtype)
    size = out.numel() * out.element_size()
    madvise = _madvise() if size >= _HUGE_MIN_BYTES else None
    if madvise is not None:
        ptr = out.data_ptr()
        start, end = -(-ptr // _HUGE) * _HUGE, (ptr + size) // _HUGE * _HUGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: a refusal changes nothing
    return out
