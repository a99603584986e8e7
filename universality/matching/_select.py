"""Compiled selection loops for candidate search: exact per-row top-k of bfloat16 blocks, and pair dot products.

``row_topk_bf16`` reads a bfloat16 similarity block through its int16 bit pattern (no float copy;
non-negative bfloat16 values order like their bits). Per row, one vectorised pass takes the maximum of every
64-entry chunk; the k-th largest of those maxima (a two-digit radix count) is a lower bound on the row's k-th
largest entry, so only the chunks reaching it (typically about k of n/64) are scanned entry by entry, into a
small buffer kept to the k best by quickselect. The selection is exact in bfloat16: the k largest values of
each row (ties broken arbitrarily). Without numba the same results come from ``torch.topk``.
"""

from __future__ import annotations

import numpy as np
import torch

from ._kernels import HAVE_NUMBA, numba

_CHUNK = 64  # entries whose maximum is compared with a row's bar at once


if HAVE_NUMBA:

    @numba.njit(inline="always")
    def _sortable_nb(u):
        """bfloat16 bits (as a signed integer) -> an integer increasing with the float value."""
        return u ^ ((u >> 15) & 0x7FFF)

    @numba.njit(cache=True, nogil=True)
    def _keep_best(keys, idx, count, k):
        """Move the ``k`` largest of ``keys[:count]`` (with their ``idx``) to the front, in place (quickselect);
        return the smallest of them."""
        lo, hi, want = 0, count - 1, k - 1
        while lo < hi:
            pivot = keys[(lo + hi) >> 1]
            i, j = lo, hi
            while i <= j:
                while keys[i] > pivot:
                    i += 1
                while keys[j] < pivot:
                    j -= 1
                if i <= j:
                    keys[i], keys[j] = keys[j], keys[i]
                    idx[i], idx[j] = idx[j], idx[i]
                    i += 1
                    j -= 1
            if want <= j:
                hi = j
            elif want >= i:
                lo = i
            else:
                break
        low = keys[0]
        for t in range(1, k):
            low = min(low, keys[t])
        return low

    @numba.njit(cache=True, nogil=True)
    def _kth_largest_nonneg(values, k, hist):
        """The k-th largest of the non-negative int16 ``values`` by a two-digit radix count (−1 if fewer than k)."""
        hist[:] = 0
        for v in values:
            if v >= 0:
                hist[v >> 7] += 1
        seen = 0
        high = 255
        while high >= 0 and seen + hist[high] < k:
            seen += hist[high]
            high -= 1
        if high < 0:
            return -1
        hist[:] = 0
        for v in values:
            if v >= 0 and (v >> 7) == high:
                hist[v & 127] += 1
        low = 127
        while seen + hist[low] < k:
            seen += hist[low]
            low -= 1
        return (high << 7) | low

    @numba.njit(cache=True, nogil=True)
    def _row_topk_one(x, k, keys, idx, maxima, hist, out):
        """Top ``k`` of one row ``x`` [n] (int16 bits of bfloat16) into ``out`` [k]."""
        n = x.size
        n_chunks = n // _CHUNK
        bar = np.int64(-(1 << 40))  # no bar: every entry is looked at
        for c in range(n_chunks):
            maxima[c] = x[c * _CHUNK:(c + 1) * _CHUNK].max()
        if n_chunks >= k:
            # the k-th largest chunk maximum: k chunks hold an entry at least this large, so the k-th largest
            # entry is too (valid when non-negative: raw bits order non-negative floats only)
            kth = _kth_largest_nonneg(maxima[:n_chunks], k, hist)
            if kth >= 0:
                bar = kth - 1  # entries equal to it are kept until the buffer first fills
        cap = keys.size
        count = 0
        for c in range(n_chunks + 1):
            j0 = c * _CHUNK
            j1 = min(n, j0 + _CHUNK)
            if j0 >= j1:
                break
            if bar >= 0 and c < n_chunks and np.int64(maxima[c]) <= bar:
                continue
            for j in range(j0, j1):
                key = _sortable_nb(np.int64(x[j]))
                if key > bar:
                    keys[count] = key
                    idx[count] = j
                    count += 1
                    if count == cap:
                        bar = _keep_best(keys, idx, count, k)
                        count = k
        _keep_best(keys, idx, count, k)
        out[:] = idx[:k]

    @numba.njit(cache=True, nogil=True)
    def _row_topk_rows(block, k, out, r0, r1):
        """Rows ``r0:r1`` of ``block`` [rows, n] (int16 bits of bfloat16) into ``out`` [rows, k], in the calling thread."""
        n_cols = block.shape[1]
        keys = np.empty(4 * k, dtype=np.int64)
        idx = np.empty(4 * k, dtype=np.int64)
        maxima = np.empty(n_cols // _CHUNK + 1, dtype=np.int16)
        hist = np.empty(256, dtype=np.int64)
        for r in range(r0, r1):
            _row_topk_one(block[r], k, keys, idx, maxima, hist, out[r])

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _row_topk_kernel(block, k, out, n_parts):
        n_rows = block.shape[0]
        per = (n_rows + n_parts - 1) // n_parts
        for part in numba.prange(n_parts):
            _row_topk_rows(block, k, out, part * per, min(n_rows, (part + 1) * per))

    @numba.njit(cache=True, nogil=True)
    def _row_topk_f32_one(x, k, keys, idx, maxima, spare, out):
        """Top ``k`` of one float32 row ``x`` [n] into ``out`` [k]. ``maxima`` [n // 64]: the maximum of every whole
        64-entry chunk, or empty when there are fewer chunks than ``k`` (then every entry is looked at)."""
        n = x.size
        n_chunks = maxima.size
        bar = -np.inf
        if n_chunks:
            spare[:n_chunks] = maxima
            # the k-th largest chunk maximum: k chunks hold an entry at least this large, so the row's k-th
            # largest entry is too, and nothing below it can be among the top k
            bar = _keep_best(spare, idx, n_chunks, k)
        cap = keys.size
        count = 0
        for c in range((n + _CHUNK - 1) // _CHUNK):
            if c < n_chunks and maxima[c] < bar:
                continue
            for j in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
                v = x[j]
                if v >= bar:
                    keys[count] = v
                    idx[count] = j
                    count += 1
                    if count == cap:
                        bar = _keep_best(keys, idx, count, k)
                        count = k
        _keep_best(keys, idx, count, k)
        out[:] = idx[:k]

    @numba.njit(cache=True, nogil=True)
    def _row_topk_f32_rows(block, maxima, k, out, r0, r1):
        """Rows ``r0:r1`` of ``block`` [rows, n] float32 (chunk ``maxima`` [rows, n // 64] or [rows, 0]) into
        ``out`` [rows, k], in the calling thread."""
        n_cols = block.shape[1]
        keys = np.empty(4 * k, dtype=np.float32)
        idx = np.empty(max(4 * k, n_cols // _CHUNK + 1), dtype=np.int64)
        spare = np.empty(n_cols // _CHUNK + 1, dtype=np.float32)
        for r in range(r0, r1):
            _row_topk_f32_one(block[r], k, keys, idx, maxima[r], spare, out[r])

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _row_topk_f32_kernel(block, maxima, k, out, n_parts):
        n_rows = block.shape[0]
        per = (n_rows + n_parts - 1) // n_parts
        for part in numba.prange(n_parts):
            _row_topk_f32_rows(block, maxima, k, out, part * per, min(n_rows, (part + 1) * per))

    @numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
    def _pair_dots_kernel(left, right, rows, cols, out):
        d = left.shape[1]
        for e in numba.prange(rows.size):
            a = left[rows[e]]
            b = right[cols[e]]
            s = np.float32(0.0)
            for t in range(d):
                s += a[t] * b[t]
            out[e] = s


def row_topk_bf16(block: torch.Tensor, k: int, *, threads: int | None = None) -> torch.Tensor:
    """[rows, k] int64 column indices of the ``k`` largest entries of each row of the bfloat16 ``block``
    [rows, n] (order within a row unspecified; ``k`` ≤ n). ``threads``: numba threads (None: all);
    ``threads=1`` runs in the calling thread, so several Python threads may select concurrently."""
    if not HAVE_NUMBA:
        return block.topk(k, dim=1, sorted=False).indices
    bits = block.contiguous().view(torch.int16).numpy()
    out = np.empty((block.shape[0], k), dtype=np.int64)
    if threads == 1:
        _row_topk_rows(bits, k, out, 0, bits.shape[0])
    else:
        _row_topk_kernel(bits, k, out, min(block.shape[0], 4 * numba.get_num_threads()))
    return torch.from_numpy(out)


def row_topk_f32(block: torch.Tensor, k: int, *, threads: int | None = None) -> torch.Tensor:
    """[rows, k] int64 column indices of the ``k`` largest entries of each row of the float32 ``block`` [rows, n]
    (order within a row unspecified; ``k`` ≤ n; finite entries). ``threads``: numba threads (None: all);
    ``threads=1`` runs in the calling thread, so several Python threads may select concurrently.

    The maxima of the 64-entry chunks come from one vectorised ``amax`` over the block; per row, the k-th
    largest of them bounds the row's k-th largest entry from below, so only chunks reaching it are scanned."""
    if not HAVE_NUMBA:
        return block.topk(k, dim=1, sorted=False).indices
    rows, n = block.shape
    n_chunks = n // _CHUNK
    if n_chunks >= k:
        maxima = block[:, :n_chunks * _CHUNK].reshape(rows, n_chunks, _CHUNK).amax(2).numpy()
    else:
        maxima = np.empty((rows, 0), dtype=np.float32)
    x = block.contiguous().numpy()
    out = np.empty((rows, k), dtype=np.int64)
    if threads == 1:
        _row_topk_f32_rows(x, maxima, k, out, 0, rows)
    else:
        _row_topk_f32_kernel(x, maxima, k, out, min(rows, 4 * numba.get_num_threads()))
    return torch.from_numpy(out)


def pair_dots(left: torch.Tensor, right: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float64 [m]: ``left[rows[e]] · right[cols[e]]`` for float32 factors ``left`` [n_a, d], ``right`` [n_b, d]
    (each dot product accumulated in float32, as a float32 matmul would)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    if not HAVE_NUMBA or left.dtype != torch.float32 or right.dtype != torch.float32:
        out = np.empty(rows.size)
        step = max(1024, (1 << 22) // max(1, left.shape[1]))
        for s in range(0, rows.size, step):
            a = left[torch.from_numpy(rows[s:s + step])].numpy()
            b = right[torch.from_numpy(cols[s:s + step])].numpy()
            out[s:s + step] = np.einsum("ij,ij->i", a, b)
        return out
    out = np.empty(rows.size, dtype=np.float32)
    _pair_dots_kernel(left.contiguous().numpy(), right.contiguous().numpy(), rows, cols, out)
    return out.astype(np.float64)
