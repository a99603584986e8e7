"""Compiled inner loops of the sparse MPPC path (numba when installed, scipy otherwise).

The sparse path computes, for every feature ``i`` of side A, the row
``Σab[i, :]`` by walking only the tokens where ``i`` is active and, for each,
only the features of side B active on that token (co-active pairs). The row is
kept in one thread-local float64 buffer of length ``n_b`` (L2-resident), turned
into Pearson r for *every* column (so pairs that never co-fire get their exact
r = −μaμb/(σaσb)), reduced to the row max and folded into per-thread column
maxima, then cleared. No ``n_a × n_b`` matrix is ever held.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

try:  # numba is optional: without it the scipy fallback below is used
    import numba

    HAVE_NUMBA = os.environ.get("UNIVERSALITY_NO_NUMBA", "") in ("", "0")
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None
    HAVE_NUMBA = False


if numba is not None:

    def _sparse_rows_py(a_ptr, a_tok, a_val, b_ptr, b_idx, b_val, n, sum_a, inv_a, sum_b, inv_b, n_parts):
        n_a = a_ptr.size - 1
        n_b = sum_b.size
        # r_ij = (n s_ij - sum_a_i sum_b_j) inv_a_i inv_b_j; dead columns get -inf through an additive mask
        mask_b = np.zeros(n_b)
        for j in range(n_b):
            if inv_b[j] == 0.0:
                mask_b[j] = -np.inf
        row_max = np.full(n_a, np.nan)
        row_arg = np.full(n_a, -1, dtype=np.int64)
        col_max = np.full((n_parts, n_b), -np.inf)
        col_arg = np.full((n_parts, n_b), -1, dtype=np.int64)
        per = (n_a + n_parts - 1) // n_parts
        for part in numba.prange(n_parts):
            acc = np.zeros(n_b)
            cmax = col_max[part]
            carg = col_arg[part]
            stop = min(n_a, (part + 1) * per)
            for i in range(part * per, stop):
                if inv_a[i] == 0.0:
                    continue
                for p in range(a_ptr[i], a_ptr[i + 1]):
                    t = a_tok[p]
                    av = np.float64(a_val[p])
                    for q in range(b_ptr[t], b_ptr[t + 1]):
                        acc[b_idx[q]] += av * np.float64(b_val[q])
                si = sum_a[i]
                ii = inv_a[i]
                for j in range(n_b):  # vectorisable: Σab row -> r row in place
                    acc[j] = (n * acc[j] - si * sum_b[j]) * ii * inv_b[j] + mask_b[j]
                barg = 0
                best = acc[0]
                for j in range(1, n_b):
                    if acc[j] > best:
                        best = acc[j]
                        barg = j
                if best > -np.inf:
                    row_max[i] = best
                    row_arg[i] = barg
                for j in range(n_b):
                    r = acc[j]
                    better = r > cmax[j]
                    cmax[j] = r if better else cmax[j]
                    carg[j] = i if better else carg[j]
                    acc[j] = 0.0
        return row_max, row_arg, col_max, col_arg

    try:  # cache the compiled kernel next to the module; a read-only install compiles per process instead
        _sparse_rows_kernel = numba.njit(parallel=True, cache=True, nogil=True)(_sparse_rows_py)
    except RuntimeError:  # pragma: no cover - depends on the install location
        _sparse_rows_kernel = numba.njit(parallel=True, cache=False, nogil=True)(_sparse_rows_py)


def _merge_columns(col_max: np.ndarray, col_arg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduce per-part column maxima [parts, n_b] to one (first index wins on ties, as np.argmax)."""
    best = np.full(col_max.shape[1], -np.inf)
    arg = np.full(col_max.shape[1], -1, dtype=np.int64)
    for part in range(col_max.shape[0]):
        better = col_max[part] > best
        best = np.where(better, col_max[part], best)
        arg = np.where(better, col_arg[part], arg)
    best[arg < 0] = np.nan
    return best, arg


def fold_block_maxima(r: np.ndarray, r0: int, dead_a: np.ndarray, dead_b: np.ndarray, row_max: np.ndarray,
                      row_arg: np.ndarray, col_max: np.ndarray, col_arg: np.ndarray) -> None:
    """Fold one block of Pearson rows ``r`` [rows, n_b] (rows ``r0:r0+rows`` of the full matrix) into running maxima.

    Dead rows (``dead_a`` [rows]) and columns (``dead_b`` [n_b]) are masked first. ``row_max``/``row_arg``
    [n_a] receive this block's row maxima; ``col_max``/``col_arg`` [n_b] keep the best row seen so far
    (updated in place; ``r`` is overwritten by the masking).
    """
    r[:, dead_b] = -np.inf
    r[dead_a] = -np.inf
    arg = r.argmax(axis=1)
    best = r[np.arange(r.shape[0]), arg]
    ok = np.isfinite(best)
    row_max[r0:r0 + r.shape[0]][ok] = best[ok]
    row_arg[r0:r0 + r.shape[0]][ok] = arg[ok]
    carg = r.argmax(axis=0)
    cbest = r[carg, np.arange(r.shape[1])]
    better = cbest > col_max
    col_max[better] = cbest[better]
    col_arg[better] = carg[better] + r0


def _sparse_rows_scipy(a_csc: sp.csc_matrix, b_csr: sp.csr_matrix, n, sum_a, inv_a, sum_b, inv_b, block_rows: int):
    """Fallback without numba: blocks of Σab rows through scipy's sparse product."""
    n_a, n_b = a_csc.shape[1], b_csr.shape[1]
    a_t = sp.csr_matrix((a_csc.data.astype(np.float64), a_csc.indices, a_csc.indptr), shape=(n_a, a_csc.shape[0]))
    b64 = b_csr.astype(np.float64)
    row_max = np.full(n_a, np.nan)
    row_arg = np.full(n_a, -1, dtype=np.int64)
    col_max = np.full((1, n_b), -np.inf)
    col_arg = np.full((1, n_b), -1, dtype=np.int64)
    live_b = inv_b != 0
    for r0 in range(0, n_a, block_rows):
        r1 = min(n_a, r0 + block_rows)
        s = (a_t[r0:r1] @ b64).toarray()
        r = (n * s - np.outer(sum_a[r0:r1], sum_b)) * inv_a[r0:r1, None] * inv_b[None, :]
        fold_block_maxima(r, r0, inv_a[r0:r1] == 0, ~live_b, row_max, row_arg, col_max[0], col_arg[0])
    return row_max, row_arg, col_max, col_arg


def sparse_max_correlations(a_csc, b_csr, n, sum_a, inv_a, sum_b, inv_b, *, threads: int | None = None, block_rows: int = 512):
    """Row and column maxima (and their arguments) of the Pearson matrix of two sparse code sets.

    ``a_csc`` [n_tokens, n_a] (CSC, so each feature's tokens are contiguous) and
    ``b_csr`` [n_tokens, n_b] (CSR); ``sum_*`` are the float64 sums and
    ``inv_*`` = 1/sqrt(n Σx² − (Σx)²) per feature, 0 for zero-variance features
    (skipped). Returns ``(row_max [n_a], row_arg, col_max [n_b], col_arg)`` with
    NaN / −1 where a feature is dead or has no live partner.
    """
    if HAVE_NUMBA:
        parts = max(1, threads or numba.get_num_threads())
        parts = min(parts * 4, max(1, a_csc.shape[1]))
        i64, f64 = np.int64, np.float64
        # one compiled specialisation per value dtype: float32 codes stay float32 (products are formed in float64)
        vt = np.float32 if a_csc.data.dtype == np.float32 and b_csr.data.dtype == np.float32 else f64
        rm, ra, cm, ca = _sparse_rows_kernel(
            a_csc.indptr.astype(i64, copy=False), a_csc.indices.astype(np.int32, copy=False),
            a_csc.data.astype(vt, copy=False), b_csr.indptr.astype(i64, copy=False),
            b_csr.indices.astype(np.int32, copy=False), b_csr.data.astype(vt, copy=False), float(n),
            sum_a.astype(f64, copy=False), inv_a.astype(f64, copy=False), sum_b.astype(f64, copy=False),
            inv_b.astype(f64, copy=False), parts)
    else:
        rm, ra, cm, ca = _sparse_rows_scipy(a_csc, b_csr, n, sum_a, inv_a, sum_b, inv_b, block_rows)
    col_max, col_arg = _merge_columns(cm, ca)
    return rm, ra, col_max, col_arg
