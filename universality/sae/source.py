"""Where training batches come from: a tensor, an activation store, a callable or any iterable.

:class:`BatchStream` turns each accepted input into a stream of fixed-size
``(x [batch, d_in], y [batch, d_out] | None)`` pairs and can be replayed from
the start (resuming a run re-reads and skips the batches already trained on):

* a tensor ``[n, d]`` (with an optional aligned ``target`` tensor) is shuffled
  per epoch with a generator seeded by ``(seed, epoch)``;
* an object with ``.batches(batch_size, shuffle=True, seed=...)`` (the
  activation store) is asked for its batches;
* a callable is called with no argument and must return an iterable;
* any other iterable is iterated (once: replaying it needs one of the above).

Items of a stream may be tensors ``[..., d]`` or ``(x, y)`` pairs; they are
flattened to rows and re-cut into ``batch_size`` rows.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from .._errors import UniversalityError

Pair = tuple[torch.Tensor, "torch.Tensor | None"]


def _as_pair(item: Any, index: int) -> Pair:
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor) and (item[1] is None or isinstance(item[1], torch.Tensor)):
        x, y = item
    elif isinstance(item, torch.Tensor):
        x, y = item, None
    else:
        raise UniversalityError(
            f"batch {index} of the activation source is {type(item).__name__}; yield float tensors [batch, d] or (x, y) pairs of them"
        )
    if x.dim() < 2 or (y is not None and (y.dim() < 2 or y.shape[:-1] != x.shape[:-1])):
        raise UniversalityError(
            f"batch {index} of the activation source has shape {tuple(x.shape)}"
            + (f" / target {tuple(y.shape)}" if y is not None else "")
            + "; expected [batch, d] (and a target with the same leading shape)"
        )
    x = x.reshape(-1, x.shape[-1])
    y = y.reshape(-1, y.shape[-1]) if y is not None else None
    return x, y


class BatchStream:
    """A replayable stream of ``(x [batch_size, d_in], y | None)`` training pairs.

    Args:
        source: tensor [n, d_in], activation store (``.batches``), callable or iterable.
        batch_size: rows per yielded pair.
        seed: shuffle seed (tensor and store sources).
        target: tensor [n, d_out] aligned with a tensor ``source`` (transcoders).
        n_tokens: stop after this many rows; ``None``: one pass over a stream,
            ``max(n, 300 * batch_size)`` rows for a tensor.
    """

    def __init__(self, source: Any, batch_size: int, seed: int = 0, target: torch.Tensor | None = None, n_tokens: int | None = None):
        self.source = source
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.target = target
        self._used_once = False
        if isinstance(source, torch.Tensor):
            if source.dim() != 2:
                raise UniversalityError(f"activations have shape {tuple(source.shape)}; give a 2-D tensor [n, d] or a stream of batches")
            if source.shape[0] == 0:
                raise UniversalityError("activations tensor has no rows; give at least one row")
            if target is not None:
                if not isinstance(target, torch.Tensor) or target.dim() != 2 or target.shape[0] != source.shape[0]:
                    shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
                    raise UniversalityError(f"target has shape {shape}; it must be a 2-D tensor with the same {source.shape[0]} rows as the input")
            n = source.shape[0]
            self.n_tokens = n_tokens if n_tokens is not None else max(n, 300 * self.batch_size)
        else:
            if target is not None:
                raise UniversalityError("target= needs the input as a tensor; for streams yield (x, y) pairs instead")
            if isinstance(source, (str, bytes)) or not (hasattr(source, "batches") or callable(source) or hasattr(source, "__iter__")):
                raise UniversalityError(
                    f"activations of type {type(source).__name__} are not usable; give a tensor [n, d], an activation store, a callable or an iterable of [batch, d] tensors"
                )
            self.n_tokens = n_tokens
        self._first: Pair | None = None

    @property
    def total_steps(self) -> int | None:
        """Number of optimisation steps when known in advance, else ``None``."""
        if self.n_tokens is not None:
            rows = self.batch_size
            if isinstance(self.source, torch.Tensor):
                rows = min(rows, self.source.shape[0])
            return max(1, -(-self.n_tokens // rows))
        return None

    def first(self) -> Pair:
        """The first pair (used to size, normalise and initialise dictionaries)."""
        if self._first is None:
            for pair in self:
                self._first = pair
                break
            else:
                raise UniversalityError("the activation source yielded no batch; give at least one batch of activations")
        return self._first

    def _raw(self) -> Iterator[Any]:
        src = self.source
        if isinstance(src, torch.Tensor):
            yield from self._tensor_batches()
            return
        if hasattr(src, "batches"):
            yield from src.batches(self.batch_size, shuffle=True, seed=self.seed)
            return
        if callable(src):
            yield from src()
            return
        if self._used_once and iter(src) is src:
            raise UniversalityError("the activation source is a one-shot iterator already consumed; pass a callable or a store to read it again")
        self._used_once = True
        yield from src

    def _tensor_batches(self) -> Iterator[Pair]:
        x, y = self.source, self.target
        n, bs = x.shape[0], self.batch_size
        epoch = 0
        while True:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=gen)
            if n < bs:
                yield x[perm], (y[perm] if y is not None else None)
            else:
                for i in range(0, n - bs + 1, bs):
                    idx = perm[i : i + bs]
                    yield x[idx], (y[idx] if y is not None else None)
            epoch += 1

    def __iter__(self) -> Iterator[Pair]:
        """Yield pairs of exactly ``batch_size`` rows (a short final pair of a stream is kept), up to ``n_tokens`` rows."""
        bs = self.batch_size
        buf_x: list[torch.Tensor] = []
        buf_y: list[torch.Tensor] = []
        have = 0
        emitted = 0
        limit = self.n_tokens
        for i, item in enumerate(self._raw()):
            x, y = _as_pair(item, i)
            if buf_x and ((y is None) != (not buf_y)):
                raise UniversalityError(f"batch {i} of the activation source mixes plain tensors and (x, y) pairs; use one form")
            buf_x.append(x)
            if y is not None:
                buf_y.append(y)
            have += x.shape[0]
            while have >= bs:
                cat_x = torch.cat(buf_x) if len(buf_x) > 1 else buf_x[0]
                cat_y = (torch.cat(buf_y) if len(buf_y) > 1 else buf_y[0]) if buf_y else None
                out = (cat_x[:bs], cat_y[:bs] if cat_y is not None else None)
                buf_x = [cat_x[bs:]] if have > bs else []
                buf_y = [cat_y[bs:]] if (cat_y is not None and have > bs) else []
                have -= bs
                yield out
                emitted += bs
                if limit is not None and emitted >= limit:
                    return
            if isinstance(self.source, torch.Tensor) and self.source.shape[0] < bs and have:
                # a tensor smaller than one batch: every epoch is one (smaller) batch
                out = (buf_x[0], buf_y[0] if buf_y else None)
                buf_x, buf_y, have = [], [], 0
                yield out
                emitted += out[0].shape[0]
                if limit is not None and emitted >= limit:
                    return
        if have:
            yield (torch.cat(buf_x), torch.cat(buf_y) if buf_y else None)
