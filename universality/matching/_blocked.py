"""Row blocks of a large product handled by worker threads, each with single-threaded torch.

A blocked product followed by a compiled selection alternates two thread pools (torch's for the matmul,
numba's for the selection) and meets a barrier at the end of every step; on a loaded machine every barrier
waits for the slowest, possibly descheduled, thread. Here each worker instead takes the next block from a
shared counter and does both steps itself, single-threaded: no barrier, no hand-over between pools, and the
block it just wrote is still in its core's cache when it selects from it. A worker that is descheduled
simply takes fewer blocks.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from .._progress import progress


def for_each_row_block(n_rows: int, step: int, work: Callable[[int, int, int], None], *, workers: int | None = None,
                       desc: str = "blocks") -> None:
    """Call ``work(worker, r0, r1)`` once for every block ``[r0, r1)`` of ``step`` rows in ``range(n_rows)``.

    ``workers`` threads (default ``torch.get_num_threads()``, at most one per block) share the blocks; while
    they run torch is single-threaded (restored afterwards), so ``work`` should use single-threaded kernels.
    ``worker`` (0 … workers − 1) lets ``work`` keep one buffer per thread. With one worker the blocks run in
    the calling thread and torch's thread count is left alone. Exceptions in ``work`` are raised here.
    """
    starts = range(0, n_rows, step)
    workers = max(1, min(workers or torch.get_num_threads(), len(starts)))
    blocks = iter(progress(starts, desc=desc, unit="block"))
    if workers == 1:
        for r0 in blocks:
            work(0, r0, min(n_rows, r0 + step))
        return
    lock = threading.Lock()
    failed = threading.Event()

    def loop(worker: int) -> None:
        torch.set_num_threads(1)  # this thread's torch (and MKL) calls: single-threaded
        while not failed.is_set():
            with lock:
                r0 = next(blocks, None)
            if r0 is None:
                return
            try:
                work(worker, r0, min(n_rows, r0 + step))
            except BaseException:
                failed.set()
                raise

    old = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="universality-block") as pool:
            for future in [pool.submit(loop, w) for w in range(workers)]:
                future.result()
    finally:
        torch.set_num_threads(old)
