"""Exact streamed Pearson statistics and MPPC (max pairwise Pearson correlation).

MPPC(i) = max_j Pearson(f_A,i, f_B,j) over aligned tokens, in both directions
(Wang et al., "Towards Universality"). Statistics are float64 sums Σa, Σb, Σa²,
Σb², Σab accumulated chunk by chunk; r is formed from them at the end:

    r_ij = (n Σab_ij − Σa_i Σb_j) / sqrt((n Σa²_i − (Σa_i)²) (n Σb²_j − (Σb_j)²))

Two paths give the same numbers: a *dense* path (float64 matmul per chunk) for
dense activations, and a *sparse* path for TopK-style codes where only co-active
pairs touch Σab; pairs that never co-fire still get their exact
r = −μaμb/(σaσb), because r is evaluated for every column of each row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from .._errors import UniversalityError
from .._progress import progress
from ._inputs import check_threshold, density, is_sparse, to_csr, to_numpy
from ._kernels import fold_block_maxima, sparse_max_correlations

_DENSE_BLOCK_ROWS = 1024
_DENSE_CHUNK_ROWS = 8192
_SMALL_PRODUCT = 1 << 24  # multiply-adds below which a chunk's Σab uses numpy


class MatchDirection(NamedTuple):
    """Best partner of every source feature in the other set."""

    max_r: torch.Tensor
    """[n_source] float64: max_j r(i, j); NaN for dead source features."""
    argmax: torch.Tensor
    """[n_source] int64: the j attaining it; −1 for dead source features."""


class MPPCSummary(NamedTuple):
    """Summary of one direction's max-r values over live (and frequent enough) features."""

    mean: float
    """Mean MPPC."""
    median: float
    """Median MPPC."""
    frac_above: dict[float, float]
    """Threshold → fraction of counted features with MPPC above it."""
    n_features: int
    """How many features were counted (dead and rare ones left out)."""


@dataclass
class MPPCResult:
    """MPPC in both directions plus the per-feature statistics behind it."""

    a_to_b: MatchDirection
    """For each feature of A, its best-correlated feature of B."""
    b_to_a: MatchDirection
    """For each feature of B, its best-correlated feature of A."""
    dead_a: torch.Tensor
    """[n_a] bool: zero variance over the tokens seen (never active, or constant); left out of summaries."""
    dead_b: torch.Tensor
    """[n_b] bool: same for B."""
    freq_a: torch.Tensor
    """[n_a] float64: fraction of tokens on which each A feature is non-zero."""
    freq_b: torch.Tensor
    """[n_b] float64: same for B."""
    n_tokens: float
    """Number of tokens seen (the sum of token weights when weights were given)."""
    path: str = "dense"
    """``"dense"`` or ``"sparse"``: which accumulation path produced the statistics."""

    def summary(self, direction: str = "a_to_b", *, min_freq: float = 0.0,
                thresholds: tuple[float, ...] = (0.5, 0.7, 0.9)) -> MPPCSummary:
        """Mean, median and fraction above each threshold of MPPC over live features of ``direction``.

        ``min_freq`` drops source features active on fewer than that fraction of tokens.
        """
        thresholds = tuple(check_threshold(t, "each MPPC threshold") for t in thresholds)
        values = _direction_values(self, direction, min_freq)
        if values.size == 0:
            return MPPCSummary(float("nan"), float("nan"), {float(t): float("nan") for t in thresholds}, 0)
        return MPPCSummary(float(values.mean()), float(np.median(values)),
                           {float(t): float((values > t).mean()) for t in thresholds}, int(values.size))

    def to_dict(self) -> dict:
        """A JSON-ready dict of both directions' summaries and counts (no per-feature arrays)."""
        out = {"n_tokens": float(self.n_tokens), "path": self.path,
               "n_dead_a": int(self.dead_a.sum()), "n_dead_b": int(self.dead_b.sum())}
        for d in ("a_to_b", "b_to_a"):
            s = self.summary(d)
            out[d] = {"mean": _finite(s.mean), "median": _finite(s.median), "n_features": s.n_features,
                      "frac_above": {str(k): _finite(v) for k, v in s.frac_above.items()}}
        return out


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _direction_values(r: MPPCResult, direction: str, min_freq: float) -> np.ndarray:
    if direction == "a_to_b":
        d, dead, freq = r.a_to_b, r.dead_a, r.freq_a
    elif direction == "b_to_a":
        d, dead, freq = r.b_to_a, r.dead_b, r.freq_b
    else:
        raise UniversalityError(f"direction must be 'a_to_b' or 'b_to_a', got {direction!r}")
    keep = (~dead.numpy()) & (freq.numpy() >= min_freq) & np.isfinite(d.max_r.numpy())
    return d.max_r.numpy()[keep]


@dataclass
class PearsonAccumulator:
    """Streams aligned chunk pairs into exact float64 Pearson statistics; :meth:`result` gives MPPC.

    ``add(a, b)`` takes [t, n_a] and [t, n_b] (tensors, arrays or scipy sparse).
    """

    sparse: bool | str = "auto"
    """``True``: sparse path (co-active pairs only); ``False``: dense float64 matmul; ``"auto"``: sparse when the
    first chunk of both sides has at most ``density_threshold`` non-zeros."""
    density_threshold: float = 0.05
    """Density at or below which ``"auto"`` picks the sparse path."""
    threads: int | None = None
    """Worker threads of the sparse kernel (None: numba's default)."""
    _n: float = field(default=0.0, init=False, repr=False)
    _stats: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sparse not in (True, False, "auto"):
            raise UniversalityError(f"sparse must be True, False or 'auto', got {self.sparse!r}")
        if not 0.0 <= float(self.density_threshold) <= 1.0:
            raise UniversalityError(f"density_threshold must lie in [0, 1], got {self.density_threshold!r}")
        self._path: str | None = None
        self._chunks_a: list[sp.csr_matrix] = []
        self._chunks_b: list[sp.csr_matrix] = []
        self._cross: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None

    def add(self, a: Any, b: Any, weights: Any = None) -> None:
        """Fold one aligned chunk pair (same token count) into the statistics; ``weights`` [t] scale tokens."""
        ta, tb = _rows(a), _rows(b)
        if ta != tb:
            raise UniversalityError(f"chunk token counts differ between the two sides ({ta} vs {tb}); chunks must be aligned token by token")
        fa, fb = _cols(a, "codes_a"), _cols(b, "codes_b")
        if self._shape is None:
            self._shape = (fa, fb)
        elif self._shape != (fa, fb):
            raise UniversalityError(f"chunk feature counts changed from {self._shape} to {(fa, fb)}; every chunk must have the same widths")
        w = None
        if weights is not None:
            w = to_numpy(weights, "weights", ndim=1)
            if w.shape[0] != ta or (w < 0).any():
                raise UniversalityError(f"weights must be {ta} non-negative numbers, one per token")
        if ta == 0:
            return
        if self._path is None:
            if self.sparse == "auto":
                self._path = "sparse" if max(density(a), density(b)) <= self.density_threshold else "dense"
            else:
                self._path = "sparse" if self.sparse else "dense"
        if self._path == "sparse":
            self._add_sparse(to_csr(a, "codes_a"), to_csr(b, "codes_b"), w)
        else:
            self._add_dense(a, b, w)

    def _fold_marginals(self, key: str, s: np.ndarray, sq: np.ndarray, active: np.ndarray) -> None:
        if key not in self._stats:
            self._stats[key] = [np.zeros_like(s), np.zeros_like(sq), np.zeros_like(active)]
        acc = self._stats[key]
        acc[0] += s
        acc[1] += sq
        acc[2] += active

    def _add_sparse(self, a: sp.csr_matrix, b: sp.csr_matrix, w: np.ndarray | None) -> None:
        for key, m in (("a", a), ("b", b)):
            data = m.data.astype(np.float64)
            tw = np.repeat(w, np.diff(m.indptr)) if w is not None else 1.0
            n_f = m.shape[1]
            self._fold_marginals(key, np.bincount(m.indices, weights=data * tw, minlength=n_f),
                                 np.bincount(m.indices, weights=data * data * tw, minlength=n_f),
                                 np.bincount(m.indices, weights=np.broadcast_to(tw, data.shape).astype(np.float64), minlength=n_f))
        if w is not None:  # token weights enter Σab through A's values
            a = sp.csr_matrix((a.data.astype(np.float64) * np.repeat(w, np.diff(a.indptr)), a.indices, a.indptr), shape=a.shape)
        self._chunks_a.append(a)
        self._chunks_b.append(b)
        self._n += float(w.sum()) if w is not None else float(a.shape[0])

    def _add_dense(self, a: Any, b: Any, w: np.ndarray | None) -> None:
        a64 = to_numpy(a, "codes_a")
        b64 = to_numpy(b, "codes_b")
        wt = np.ones(a64.shape[0]) if w is None else w
        self._fold_marginals("a", wt @ a64, wt @ (a64 * a64), wt @ (a64 != 0).astype(np.float64))
        self._fold_marginals("b", wt @ b64, wt @ (b64 * b64), wt @ (b64 != 0).astype(np.float64))
        if self._cross is None:
            self._cross = np.zeros((a64.shape[1], b64.shape[1]))
        wa = a64 * wt[:, None] if w is not None else a64
        if wa.size * b64.shape[1] < _SMALL_PRODUCT:  # small (bootstrap-sized): numpy, no thread-pool wake-up cost
            self._cross += wa.T @ b64
        else:
            self._cross += (torch.from_numpy(wa).T @ torch.from_numpy(b64)).numpy()
        self._n += float(wt.sum())

    def result(self) -> MPPCResult:
        """MPPC in both directions from everything added so far."""
        if self._shape is None or self._n <= 0:
            raise UniversalityError("the code stream is empty: add at least one chunk with tokens before asking for MPPC")
        n = self._n
        (sa, sqa, acta), (sb, sqb, actb) = self._stats["a"], self._stats["b"]
        inv_a, dead_a = _inverse_scale(n, sa, sqa)
        inv_b, dead_b = _inverse_scale(n, sb, sqb)
        if self._path == "sparse":
            a_csc = sp.vstack(self._chunks_a, format="csr").tocsc()  # csr stacking is a cheap concatenation
            self._chunks_a = [a_csc]
            b_csr = sp.vstack(self._chunks_b, format="csr")
            self._chunks_b = [b_csr]
            rm, ra, cm, ca = sparse_max_correlations(a_csc, b_csr, n, sa, inv_a, sb, inv_b, threads=self.threads)
        else:
            rm, ra, cm, ca = _dense_max_correlations(self._cross, n, sa, inv_a, sb, inv_b)
        t = torch.from_numpy
        return MPPCResult(MatchDirection(t(rm), t(ra)), MatchDirection(t(cm), t(ca)), t(dead_a), t(dead_b),
                          t(acta / n), t(actb / n), n, self._path)


def _inverse_scale(n: float, s: np.ndarray, sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1/sqrt(n Σx² − (Σx)²) per feature, 0 where the variance is zero (dead), and the dead mask."""
    var = n * sq - s * s
    dead = var <= 1e-12 * n * sq
    inv = np.zeros_like(var)
    inv[~dead] = 1.0 / np.sqrt(var[~dead])
    return inv, dead


def _dense_max_correlations(cross, n, sa, inv_a, sb, inv_b):
    """Row/column max and argmax of r from a dense Σab, evaluated in row blocks (float64).

    numpy, not torch: its single-threaded reductions cost microseconds on the small matrices a bootstrap
    recomputes hundreds of times, where a torch reduction can wait milliseconds on its thread pool.
    """
    n_a, n_b = cross.shape
    dead_b = inv_b == 0
    row_max = np.full(n_a, np.nan)
    row_arg = np.full(n_a, -1, dtype=np.int64)
    col_max = np.full(n_b, -np.inf)
    col_arg = np.full(n_b, -1, dtype=np.int64)
    for r0 in range(0, n_a, _DENSE_BLOCK_ROWS):
        r1 = min(n_a, r0 + _DENSE_BLOCK_ROWS)
        r = cross[r0:r1] * n
        r -= sa[r0:r1, None] * sb[None, :]
        r *= inv_a[r0:r1, None]
        r *= inv_b[None, :]
        fold_block_maxima(r, r0, inv_a[r0:r1] == 0, dead_b, row_max, row_arg, col_max, col_arg)
    col_max[col_arg < 0] = np.nan
    return row_max, row_arg, col_max, col_arg


def _rows(x: Any) -> int:
    shape = getattr(x, "shape", None)
    if shape is None:
        x = np.asarray(x)
        shape = x.shape
    if len(shape) != 2:
        raise UniversalityError(f"codes must be 2-D [n_tokens, n_features], got shape {tuple(shape)}")
    return int(shape[0])


def _cols(x: Any, name: str) -> int:
    shape = getattr(x, "shape", None) or np.asarray(x).shape
    if len(shape) != 2:
        raise UniversalityError(f"{name} must be 2-D [n_tokens, n_features], got shape {tuple(shape)}")
    return int(shape[1])


def _split(a: Any, b: Any, rows: int) -> Iterator[tuple[Any, Any]]:
    n = _rows(a)
    if _rows(b) != n:
        raise UniversalityError(f"codes_a and codes_b have different token counts ({n} vs {_rows(b)}); they must be aligned token by token")
    if n == 0:
        yield a, b
        return
    for s in range(0, n, rows):
        yield a[s:s + rows], b[s:s + rows]


def mppc(codes_a: Any, codes_b: Any = None, *, sparse: bool | str = "auto", weights: Any = None,
         threads: int | None = None) -> MPPCResult:
    """Max pairwise Pearson correlation between two feature sets over aligned tokens, both directions.

    ``codes_a`` [n_tokens, n_a] and ``codes_b`` [n_tokens, n_b] (torch tensors, numpy arrays or scipy sparse),
    or ``codes_a`` alone as an iterable of aligned ``(chunk_a, chunk_b)`` pairs. ``weights`` [n_tokens]
    (only with two matrices) weight tokens, e.g. for a bootstrap. Statistics are exact float64; the result
    equals a dense float64 reference. Returns an :class:`MPPCResult`.
    """
    acc = PearsonAccumulator(sparse=sparse, threads=threads)
    if codes_b is None:
        if isinstance(codes_a, (torch.Tensor, np.ndarray)) or is_sparse(codes_a):
            raise UniversalityError("codes_b is missing: pass two [n_tokens, n_features] matrices or one iterable of (chunk_a, chunk_b) pairs")
        if weights is not None:
            raise UniversalityError("weights can only be given with two code matrices, not with a chunk iterable")
        for pair in progress(codes_a, desc="mppc", unit="chunk"):
            try:
                a, b = pair
            except (TypeError, ValueError):
                raise UniversalityError("each item of the chunk iterable must be a pair (chunk_a, chunk_b)") from None
            acc.add(a, b)
    else:
        n = _rows(codes_a)
        if weights is not None:
            w = to_numpy(weights, "weights", ndim=1)
            if w.shape[0] != n:
                raise UniversalityError(f"weights must have one entry per token ({n}), got {w.shape[0]}")
        for s, (a, b) in enumerate(_split(codes_a, codes_b, _DENSE_CHUNK_ROWS)):
            w_chunk = None if weights is None else w[s * _DENSE_CHUNK_ROWS:(s + 1) * _DENSE_CHUNK_ROWS]
            acc.add(a, b, w_chunk)
    return acc.result()


def pearson_matrix(codes_a: Any, codes_b: Any) -> torch.Tensor:
    """The full [n_a, n_b] float64 Pearson matrix of two small code sets (NaN rows/columns for zero variance)."""
    a = to_numpy(codes_a, "codes_a")
    b = to_numpy(codes_b, "codes_b")
    if a.shape[0] != b.shape[0]:
        raise UniversalityError(f"codes_a and codes_b have different token counts ({a.shape[0]} vs {b.shape[0]})")
    if a.shape[0] == 0:
        raise UniversalityError("codes are empty: at least one token is needed")
    ac = a - a.mean(0)
    bc = b - b.mean(0)
    na = np.sqrt((ac * ac).sum(0))
    nb = np.sqrt((bc * bc).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac.T @ bc) / np.outer(na, nb)
    r[na == 0] = np.nan
    r[:, nb == 0] = np.nan
    return torch.from_numpy(r)


# ----- token-sharded MPPC (torchrun): additive float64 sums reduced across processes ---------------------------

_REDUCED_BLOCK_ROWS = 512


@dataclass
class PearsonSums:
    """The additive float64 statistics of two aligned code sets on some tokens; sums of two token sets add.

    ``sum_*``, ``sq_*``, ``active_*`` are ``[n_a]`` / ``[n_b]`` (Σx, Σx², count of non-zeros); ``cross`` is Σab
    as a CSR ``[n_a, n_b]`` float64 matrix holding only pairs that were co-active on some token; ``n`` tokens.
    """

    n: float
    sum_a: np.ndarray
    sq_a: np.ndarray
    active_a: np.ndarray
    sum_b: np.ndarray
    sq_b: np.ndarray
    active_b: np.ndarray
    cross: sp.csr_matrix

    def __add__(self, other: "PearsonSums") -> "PearsonSums":
        if self.cross.shape != other.cross.shape:
            raise UniversalityError(f"Pearson sums of shapes {self.cross.shape} and {other.cross.shape} cannot be added; "
                                    "both must come from the same two dictionaries")
        return PearsonSums(self.n + other.n, self.sum_a + other.sum_a, self.sq_a + other.sq_a, self.active_a + other.active_a,
                           self.sum_b + other.sum_b, self.sq_b + other.sq_b, self.active_b + other.active_b,
                           (self.cross + other.cross).tocsr())


def pearson_sums(codes_a: Any, codes_b: Any) -> PearsonSums:
    """Exact float64 :class:`PearsonSums` of aligned codes ``codes_a`` ``[t, n_a]`` and ``codes_b`` ``[t, n_b]`` (any format).

    Products of float32 codes are exact in float64; Σab is kept only where a pair was co-active.
    """
    t = _rows(codes_a)
    if _rows(codes_b) != t:
        raise UniversalityError(f"codes_a and codes_b have different token counts ({t} vs {_rows(codes_b)}); they must be aligned token by token")
    a = to_csr(codes_a, "codes_a").astype(np.float64)
    b = to_csr(codes_b, "codes_b").astype(np.float64)

    def marginals(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = m.shape[1]
        return (np.bincount(m.indices, weights=m.data, minlength=f), np.bincount(m.indices, weights=m.data * m.data, minlength=f),
                np.bincount(m.indices[m.data != 0], minlength=f).astype(np.float64))

    sa, qa, ca = marginals(a)
    sb, qb, cb = marginals(b)
    return PearsonSums(float(t), sa, qa, ca, sb, qb, cb, sp.csr_matrix(a.T.tocsr() @ b))


def mppc_from_sums(s: PearsonSums, rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row maxima of the Pearson matrix for A-features ``rows`` = ``[lo, hi)`` (default all) and column maxima over them.

    Returns ``(row_max [hi-lo], row_arg, col_max [n_b], col_arg)`` (NaN / −1 for dead features or no live partner;
    ``col_max`` is −inf where no row of the slice reached the column). r is evaluated for every column, so pairs
    that never co-fired get their exact r = −μaμb/(σaσb). Ties go to the lower index, as in :func:`mppc`.
    """
    if s.n <= 0:
        raise UniversalityError("the code stream is empty: add at least one chunk with tokens before asking for MPPC")
    from ._kernels import fold_block_maxima

    n_a, n_b = s.cross.shape
    lo, hi = rows if rows is not None else (0, n_a)
    inv_a, dead_a = _inverse_scale(s.n, s.sum_a, s.sq_a)
    inv_b, dead_b = _inverse_scale(s.n, s.sum_b, s.sq_b)
    row_max = np.full(n_a, np.nan)
    row_arg = np.full(n_a, -1, dtype=np.int64)
    col_max = np.full(n_b, -np.inf)
    col_arg = np.full(n_b, -1, dtype=np.int64)
    for r0 in range(lo, hi, _REDUCED_BLOCK_ROWS):
        r1 = min(hi, r0 + _REDUCED_BLOCK_ROWS)
        r = s.cross[r0:r1].toarray() * s.n
        r -= s.sum_a[r0:r1, None] * s.sum_b[None, :]
        r *= inv_a[r0:r1, None]
        r *= inv_b[None, :]
        fold_block_maxima(r, r0, dead_a[r0:r1], dead_b, row_max, row_arg, col_max, col_arg)
    return row_max[lo:hi], row_arg[lo:hi], col_max, col_arg


def mppc_reduced(codes_a: Any, codes_b: Any) -> MPPCResult:
    """MPPC of codes split over processes by tokens: this process holds rows ``[t_rank, n_a]`` / ``[t_rank, n_b]``.

    The float64 sums (Σa, Σb, Σa², Σb², co-active Σab) of every process are gathered and added in rank order;
    then each process evaluates r for its slice of A-features and the slices' maxima are gathered (ties to the
    lower index). Every process returns the same :class:`MPPCResult`, equal to :func:`mppc` on all tokens up to
    float64 summation order (about 1e-15 relative in r). Without a process group it is MPPC of the given codes.
    """
    from .. import _dist

    parts = _dist.all_gather_objects(pearson_sums(codes_a, codes_b))
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    n_a, n_b = total.cross.shape
    lo, hi = _dist.shard_range(n_a)
    mine = mppc_from_sums(total, (lo, hi))
    row_max = np.full(n_a, np.nan)
    row_arg = np.full(n_a, -1, dtype=np.int64)
    col_max = np.full(n_b, -np.inf)
    col_arg = np.full(n_b, -1, dtype=np.int64)
    for r, (rm, ra, cm, ca) in enumerate(_dist.all_gather_objects(mine)):
        plo, phi = _dist.shard_range(n_a, r, _dist.world())
        row_max[plo:phi], row_arg[plo:phi] = rm, ra
        better = cm > col_max  # slices in rank order hold increasing rows: strict > keeps the lower index on ties
        col_max[better], col_arg[better] = cm[better], ca[better]
    col_max[col_arg < 0] = np.nan
    n = total.n
    _, dead_a = _inverse_scale(n, total.sum_a, total.sq_a)
    _, dead_b = _inverse_scale(n, total.sum_b, total.sq_b)
    t = torch.from_numpy
    return MPPCResult(MatchDirection(t(row_max), t(row_arg)), MatchDirection(t(col_max), t(col_arg)), t(dead_a), t(dead_b),
                      t(total.active_a / n), t(total.active_b / n), n, "sparse-reduced")
