"""Peak resident-memory readings of this process (Linux ``/proc``): per stage and for the whole process.

The kernel's high-water mark (``VmHWM``) can be reset (``/proc/self/clear_refs``), which lets each pipeline stage
report its own peak. Resetting would lose the process-wide peak, so :func:`reset_peak` first folds the current
high-water mark into :func:`process_peak`. On systems without ``/proc`` every reading is ``None``.
"""

from __future__ import annotations

_folded_peak_kib = 0


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_bytes() -> int | None:
    """Peak resident set size since the last :func:`reset_peak` (or process start), in bytes."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def reset_peak() -> bool:
    """Start a new peak window (the old peak is kept in :func:`process_peak`); ``False`` where the kernel refuses."""
    global _folded_peak_kib
    kib = _status_kib("VmHWM")
    if kib is None:
        return False
    _folded_peak_kib = max(_folded_peak_kib, kib)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def process_peak() -> int | None:
    """Peak resident set size of the whole process so far, in bytes, across every :func:`reset_peak`."""
    kib = _status_kib("VmHWM")
    if kib is None:
        return None
    return max(kib, _folded_peak_kib) * 1024
