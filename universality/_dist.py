"""Process-group helpers for runs under ``torchrun``: rank, world size, disjoint shards, agreement checks, reductions.

Outside ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment and no initialised process group) every helper
behaves as a single process: rank 0 of a world of 1, reductions return their input, barriers return at once.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from ._errors import UniversalityError


def active() -> bool:
    """Whether a process group of more than one process is initialised."""
    d = torch.distributed
    return d.is_available() and d.is_initialized() and d.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if active() else 0


def world() -> int:
    """Number of processes (1 without a process group)."""
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes shared files and prints."""
    return rank() == 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or a launcher setting the same variables) with several processes."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def local_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for a CUDA device under a launcher, else ``device`` unchanged."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def session(device: torch.device) -> Iterator[torch.device]:
    """Initialise the process group once when launched by ``torchrun`` (NCCL on CUDA, gloo on CPU); destroy it at the end.

    Yields this process's device (see :func:`local_device`). Without a launcher it yields ``device`` and does
    nothing else. Progress bars are silenced on every rank but 0. A process group initialised by the caller is
    used as is and left alone.
    """
    d = torch.distributed
    if not launched() or (d.is_available() and d.is_initialized()):
        yield local_device(device)
        return
    if not d.is_available():
        raise UniversalityError("WORLD_SIZE > 1 asks for several processes but this torch has no torch.distributed; run one process")
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    d.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if d.get_rank() != 0:
            from ._progress import set_quiet

            set_quiet(True)
        yield device
    finally:
        d.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if active():
        torch.distributed.barrier()


def shard_range(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Contiguous slice ``[lo, hi)`` of ``n`` items owned by rank ``r`` of ``w`` (default: this process).

    Slices of ranks 0..w-1 are disjoint, in rank order, cover ``range(n)`` and differ in length by at most one.
    """
    r = rank() if r is None else r
    w = world() if w is None else w
    return n * r // w, n * (r + 1) // w


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def check_agree(value: Any, what: str, fix: str) -> None:
    """Raise the same one-sentence error on every rank unless all ranks hold an equal ``value`` (e.g. a fingerprint).

    ``what`` names the value (``"the token-stream fingerprint"``), ``fix`` says what to do.
    """
    values = all_gather_objects(value)
    if any(v != values[0] for v in values[1:]):
        differ = [i for i, v in enumerate(values) if v != values[0]]
        raise UniversalityError(f"the {len(values)} processes disagree on {what} (rank 0 differs from rank(s) "
                                f"{', '.join(map(str, differ))}); {fix}")


def all_reduce_sum(x: np.ndarray) -> np.ndarray:
    """Elementwise float64 sum of ``x`` (any shape) over ranks, added in rank order so every rank gets the same bits.

    Uses an all-gather rather than ``all_reduce``: the order of additions is fixed (rank 0 + rank 1 + ...), not
    left to the backend's reduction tree. Returns a new array (``x`` in a single process).
    """
    if not active():
        return x
    parts = all_gather_objects(np.ascontiguousarray(x, dtype=np.float64))
    out = parts[0].copy()
    for p in parts[1:]:
        out += p
    return out


def raise_if_any(error: BaseException | None) -> None:
    """Turn an error on any rank into the same :class:`UniversalityError` on every rank (so no rank waits forever).

    Call at a collective point with the error this rank caught (or ``None``). A rank whose own error is a
    ``UniversalityError`` re-raises it; the others raise one naming the rank that failed.
    """
    msgs = all_gather_objects(None if error is None else str(error))
    if error is not None:
        raise error
    for i, m in enumerate(msgs):
        if m is not None:
            raise UniversalityError(f"process {i} failed: {m}")


__all__ = ["active", "rank", "world", "is_main", "launched", "local_device", "session", "barrier", "shard_range",
           "all_gather_objects", "broadcast_object", "check_agree", "all_reduce_sum", "raise_if_any"]
