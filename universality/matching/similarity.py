"""Weight-space similarity: cosine of encoder/decoder rows, dense or as factors, and top-k candidate graphs."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from .._errors import UniversalityError
from .._progress import progress
from ._inputs import check_positive_int, to_numpy, unit_rows


class Factored(NamedTuple):
    """A similarity matrix kept as factors: ``similarity = left @ right.T`` ([n_a, d] and [n_b, d])."""

    left: torch.Tensor
    """[n_a, d] row factors."""
    right: torch.Tensor
    """[n_b, d] column factors."""

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.left.shape[0]), int(self.right.shape[0]))

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Similarity rows ``start:stop`` as a dense [stop-start, n_b] tensor."""
        return self.left[start:stop] @ self.right.T

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Similarity of the given (row, col) pairs as float64 [m]."""
        r = torch.as_tensor(rows, dtype=torch.long)
        c = torch.as_tensor(cols, dtype=torch.long)
        return (self.left[r].double() * self.right[c].double()).sum(1).numpy()

    def dense(self) -> torch.Tensor:
        """The full [n_a, n_b] similarity."""
        return self.left @ self.right.T


def cosine_factors(x_a: Any, x_b: Any, *, dtype: torch.dtype = torch.float32) -> Factored:
    """Unit-normalised rows of ``x_a`` [n_a, d] and ``x_b`` [n_b, d] so that ``left @ right.T`` is their cosine."""
    a = to_numpy(x_a, "x_a")
    b = to_numpy(x_b, "x_b")
    if a.shape[1] != b.shape[1]:
        raise UniversalityError(f"rows to compare must have the same width, got {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise UniversalityError("cannot compare an empty set of rows; both matrices need at least one row")
    return Factored(torch.from_numpy(unit_rows(a)).to(dtype), torch.from_numpy(unit_rows(b)).to(dtype))


def cosine_similarity(x_a: Any, x_b: Any) -> torch.Tensor:
    """Cosine similarity [n_a, n_b] (float64) between the rows of ``x_a`` [n_a, d] and ``x_b`` [n_b, d]."""
    return cosine_factors(x_a, x_b, dtype=torch.float64).dense()


def as_similarity(similarity: Any) -> Factored | np.ndarray:
    """A :class:`Factored` as is, else a finite float64 [n_a, n_b] array."""
    if isinstance(similarity, Factored):
        return similarity
    s = to_numpy(similarity, "similarity")
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise UniversalityError(f"similarity must have at least one row and one column, got shape {s.shape}")
    return s


class Candidates(NamedTuple):
    """A sparse candidate graph: edges (rows[e], cols[e]) with similarity values[e]."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray


def topk_candidates(similarity: Any, k: int, *, block_rows: int = 4096) -> Candidates:
    """Union of every row's and every column's ``k`` most similar partners, by blocked matmul.

    ``similarity`` is a dense [n_a, n_b] matrix or a :class:`Factored`; only
    ``block_rows × n_b`` similarities are held at a time. Edge values are float64.
    """
    k = check_positive_int(k, "k")
    sim = as_similarity(similarity)
    n_a, n_b = sim.shape
    kr, kc = min(k, n_b), min(k, n_a)
    col_val = torch.full((n_b, kc), -torch.inf, dtype=torch.float64)  # running top-k of every column
    col_idx = torch.zeros((n_b, kc), dtype=torch.long)
    row_cols = []
    for r0 in progress(range(0, n_a, block_rows), desc="top-k candidates", unit="block"):
        r1 = min(n_a, r0 + block_rows)
        block = sim.rows(r0, r1) if isinstance(sim, Factored) else torch.from_numpy(sim[r0:r1])
        row_cols.append(block.topk(kr, dim=1).indices)
        bv, bi = block.T.contiguous().topk(min(kc, r1 - r0), dim=1)  # [n_b, ≤kc], contiguous rows are faster
        merged_val = torch.cat([col_val, bv.double()], dim=1)
        merged_idx = torch.cat([col_idx, bi + r0], dim=1)
        keep = merged_val.topk(kc, dim=1).indices
        col_val = merged_val.gather(1, keep)
        col_idx = merged_idx.gather(1, keep)
    rc = torch.cat(row_cols)
    rows = np.concatenate([np.repeat(np.arange(n_a), kr), col_idx.numpy().ravel()])
    cols = np.concatenate([rc.numpy().ravel(), np.repeat(np.arange(n_b), kc)])
    key = np.unique(rows.astype(np.int64) * n_b + cols)
    rows, cols = key // n_b, key % n_b
    values = sim.pairs(rows, cols) if isinstance(sim, Factored) else sim[rows, cols]
    return Candidates(rows, cols, values)
