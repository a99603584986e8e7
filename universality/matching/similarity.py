"""Weight-space similarity: cosine of encoder/decoder rows, dense or as factors, and top-k candidate graphs."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from .._errors import UniversalityError
from .._progress import progress
from ._inputs import check_positive_int, to_numpy, unit_rows
from ._select import pair_dots


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
        """Similarity of the given (row, col) pairs as float64 [m], computed in the factors' precision."""
        return pair_dots(self.left, self.right, rows, cols)

    def dense(self) -> torch.Tensor:
        """The full [n_a, n_b] similarity."""
        return self.left @ self.right.T


def cosine_factors(x_a: Any, x_b: Any, *, dtype: torch.dtype = torch.float32) -> Factored:
    """Unit-normalised rows of ``x_a`` [n_a, d] and ``x_b`` [n_b, d] so that ``left @ right.T`` is their cosine."""
    np_dtype = np.float32 if dtype in (torch.float32, torch.bfloat16, torch.float16) else np.float64
    a = to_numpy(x_a, "x_a", dtype=np_dtype)  # no float64 copy of 131K-row float32 dictionaries
    b = to_numpy(x_b, "x_b", dtype=np_dtype)
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

    def locate(self, rows: Any, cols: Any, n_b: int) -> tuple[np.ndarray, np.ndarray]:
        """For pairs (rows[i], cols[i]) [m]: their index among the edges and whether they are edges at all.

        The edges must be sorted by row, then column, as :func:`unique_edges` (hence every search) returns them;
        ``n_b`` is the number of columns.
        """
        keys = self.rows.astype(np.int64) * n_b + self.cols
        wanted = np.asarray(rows, dtype=np.int64) * n_b + np.asarray(cols, dtype=np.int64)
        pos = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
        return pos, keys[pos] == wanted


def block_rows_for(block_rows: int | None, n_b: int) -> int:
    """Rows per similarity block: ``block_rows`` checked, or (None) as many as fit in 64M entries of width
    ``n_b``, between 256 and 4096 (131K-wide dictionaries stay within a few hundred MB)."""
    if block_rows is None:
        return int(max(256, min(4096, (1 << 26) // max(1, n_b))))
    return check_positive_int(block_rows, "block_rows")


def unique_edges(rows: Any, cols: Any, vals: Any, n_b: int) -> Candidates:
    """Candidates from edge lists [m] with duplicates dropped (first value kept), sorted by row then column,
    values float64."""
    key, first = np.unique(np.asarray(rows, dtype=np.int64) * n_b + np.asarray(cols, dtype=np.int64), return_index=True)
    return Candidates(key // n_b, key % n_b, np.asarray(vals, dtype=np.float64)[first])


def topk_candidates(similarity: Any, k: int, *, block_rows: int | None = None) -> Candidates:
    """Union of every row's and every column's ``k`` most similar partners, by blocked matmul.

    ``similarity`` is a dense [n_a, n_b] matrix or a :class:`Factored`; only
    ``block_rows × n_b`` similarities are held at a time (None: as many rows as fit in 64M entries, at most
    4096, so 131K-wide dictionaries stay within a few hundred MB). Edge values (float64) are those of the blocks,
    so in the blocks' precision (float32 for float32 factors).
    """
    k = check_positive_int(k, "k")
    sim = as_similarity(similarity)
    n_a, n_b = sim.shape
    kr, kc = min(k, n_b), min(k, n_a)
    block_rows = block_rows_for(block_rows, n_b)
    # Column candidates: the exact top-k of the first block sets a per-column bar; later blocks only contribute
    # entries at or above it (a superset of each column's final top-k, since the true k-th best can only be
    # higher), and the exact per-column top-k is taken from those at the end. A block that passes too many
    # entries (adversarial row order) tightens the bar with its own exact top-k first.
    bar = None
    c_rows, c_cols, c_vals = [], [], []
    row_cols, row_vals = [], []
    for r0 in progress(range(0, n_a, block_rows), desc="top-k candidates", unit="block"):
        r1 = min(n_a, r0 + block_rows)
        block = sim.rows(r0, r1) if isinstance(sim, Factored) else torch.from_numpy(sim[r0:r1])
        rv, ri = block.topk(kr, dim=1, sorted=False)
        row_cols.append(ri)
        row_vals.append(rv)
        hits = None if bar is None else (block >= bar[None, :]).nonzero(as_tuple=True)
        if hits is None or hits[0].numel() > 4 * kc * n_b:
            bv, bi = block.topk(min(kc, r1 - r0), dim=0, sorted=False)
            kth = bv.min(dim=0).values if bv.shape[0] == kc else torch.full((n_b,), -torch.inf, dtype=bv.dtype)
            bar = kth if bar is None else torch.maximum(bar, kth)
            c_rows.append((bi + r0).ravel())
            c_cols.append(torch.arange(n_b).repeat(bv.shape[0]))
            c_vals.append(bv.ravel())
        else:
            rr, cc = hits
            c_rows.append(rr + r0)
            c_cols.append(cc)
            c_vals.append(block[rr, cc])
    cr, ccol, cv = (torch.cat(x).numpy() for x in (c_rows, c_cols, c_vals))
    order = np.lexsort((-cv.astype(np.float64), ccol))  # by column, best first
    ccol, cr, cv = ccol[order], cr[order], cv[order]
    first = np.searchsorted(ccol, ccol, side="left")
    keep = (np.arange(ccol.size) - first) < kc
    rows = np.concatenate([np.repeat(np.arange(n_a), kr), cr[keep]])
    cols = np.concatenate([torch.cat(row_cols).numpy().ravel(), ccol[keep]])
    vals = np.concatenate([torch.cat(row_vals).numpy().ravel(), cv[keep]])
    return unique_edges(rows, cols, vals, n_b)
