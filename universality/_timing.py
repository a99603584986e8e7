"""Wall-clock timing shared by the benchmarks and the analysis measurement script."""

from __future__ import annotations

import time
from typing import Callable


def best_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of ``fn()`` over ``repeat`` runs, after ``warmup`` untimed runs.

    The minimum is the least load-sensitive estimate of a function's own cost on a shared
    machine; ``repeat`` must be at least 1.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
