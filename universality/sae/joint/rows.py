"""Aligned rows of M activation sources (tensors or stores), read together: the input every joint dictionary trains on."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from ..._errors import UniversalityError


class AlignedRows:
    """M activation sources read at the same aligned rows: tensors ``[n, d_m]`` or stores (``.gather``, ``.n_rows``).

    ``rows[m]`` (optional) are the row indices of model m's source that line up
    (the alignment maps of two tokenizers, or the masked rows of one stream);
    without them every row of every source is used, in order.
    """

    def __init__(self, xs: Sequence[Any], rows: Sequence[Any] | None = None, hooks: Sequence[str | None] | None = None):
        if not isinstance(xs, (list, tuple)):
            raise UniversalityError(f"xs is a {type(xs).__name__}; give a list of aligned [n, d_m] tensors or activation stores, one per model")
        if len(xs) < 2:
            raise UniversalityError(f"xs has {len(xs)} model(s); a joint dictionary needs at least 2 models' aligned activations")
        m = len(xs)
        if rows is not None and (not isinstance(rows, (list, tuple)) or len(rows) != m):
            raise UniversalityError(f"rows must be a list of {m} row-index tensors, one per model (or None for every row)")
        if hooks is not None and (not isinstance(hooks, (list, tuple)) or len(hooks) != m):
            raise UniversalityError(f"hooks must be a list of {m} hook names, one per model (or None)")
        self.sources, self.rows, self.hooks, self.widths = list(xs), [], list(hooks) if hooks is not None else [None] * m, []
        n_ref = None
        for i, x in enumerate(xs):
            if isinstance(x, torch.Tensor):
                if x.dim() != 2:
                    raise UniversalityError(f"xs[{i}] has shape {tuple(x.shape)}; give a 2-D tensor [n, d_m]")
                n_src, width = x.shape[0], x.shape[1]
            elif hasattr(x, "gather") and hasattr(x, "n_rows"):
                n_src, width = int(x.n_rows), int(x.d(self.hooks[i]))
            else:
                raise UniversalityError(f"xs[{i}] is a {type(x).__name__}; give a tensor [n, d_m] or an activation store")
            r = None if rows is None or rows[i] is None else torch.as_tensor(rows[i], dtype=torch.long).reshape(-1)
            if r is not None and r.numel() and (int(r.min()) < 0 or int(r.max()) >= n_src):
                raise UniversalityError(f"rows[{i}] holds indices outside 0..{n_src - 1}, the rows of xs[{i}]")
            n = n_src if r is None else int(r.numel())
            if n == 0:
                raise UniversalityError(f"xs[{i}] has no aligned rows; give each model at least one row aligned with the others")
            if n_ref is not None and n != n_ref:
                raise UniversalityError(
                    f"xs[{i}] has {n} aligned rows but xs[0] has {n_ref}; every model needs the same aligned rows (pass rows= from the alignment)"
                )
            n_ref = n
            self.rows.append(r)
            self.widths.append(int(width))
        self.n = int(n_ref)

    def read(self, m: int, idx: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Rows ``idx`` (aligned positions) of model ``m`` → float32 ``[len(idx), d_m]``; NaN is an error naming the model."""
        r = idx if self.rows[m] is None else self.rows[m][idx]
        x = self.sources[m]
        out = x[r].float() if isinstance(x, torch.Tensor) else x.gather(r, self.hooks[m])
        if check and not bool(torch.isfinite(out).all()):
            raise UniversalityError(f"xs[{m}] contains NaN or infinite values; clean the activations of model {m} first")
        return out

    def concat(self, idx: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
        """Scaled concatenated rows ``[len(idx), sum d_m]`` at aligned positions ``idx`` (one finiteness check for all models)."""
        out = torch.cat([self.read(m, idx, check=False) * s for m, s in enumerate(scales)], dim=1)
        if not bool(torch.isfinite(out).all()):
            for m in range(len(scales)):
                self.read(m, idx)  # names the first model holding the bad value
        return out

    def batches(self, batch_size: int, scales: Sequence[float], seed: int, n_rows: int) -> Iterator[torch.Tensor]:
        """Shuffled scaled concatenated batches over the first ``n_rows`` aligned rows, one epoch after another (seeded)."""
        epoch = 0
        while True:
            perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            for i in range(0, max(n_rows - batch_size + 1, 1), batch_size):
                idx = perm[i:i + batch_size].sort().values
                yield self.concat(idx, scales)
            epoch += 1


__all__ = ["AlignedRows"]
