"""Exact minimum-cost full matching on a sparse bipartite graph (numba), scipy's solver where numba is absent.

The solver follows Jonker & Volgenant's shortest-augmenting-path scheme on the graph's edges only:

1. *Augmenting row reduction* (an auction-like pass, run twice): each free row takes its cheapest column at the
   current column prices and lowers that column's price until the row is indifferent between its best and
   second-best columns; a displaced row continues the pass. Most rows end matched, all matched edges tight.
2. *Shortest augmenting paths*: every row still free is matched by Dijkstra on the reduced costs (a binary
   heap; only the columns it reaches are touched and reset), then the dual prices of the reached columns are
   updated so that every reduced cost stays non-negative.

The prices form a dual certificate: at the end every edge has reduced cost ≥ 0 and every matched edge 0, so
the matching is optimal on the graph (to float64 rounding). Rows ≤ columns: every row is matched; columns
left free keep price 0, as the rectangular problem's dual requires. When some free row can reach no free
column the graph has no matching that covers every row, and :func:`min_cost_full_matching` raises
``ValueError`` (as scipy does).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from ._kernels import HAVE_NUMBA, numba

_ARR_PASSES = 2

if HAVE_NUMBA:

    @numba.njit(cache=True, nogil=True)
    def _two_best(indptr, indices, cost, price, i):
        """Row ``i``'s cheapest and second-cheapest reduced cost ``cost − price`` and their columns (−1: none)."""
        u1, u2 = np.inf, np.inf
        j1, j2 = -1, -1
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            h = cost[e] - price[j]
            if h < u2:
                if h < u1:
                    u2, j2 = u1, j1
                    u1, j1 = h, j
                else:
                    u2, j2 = h, j
        return u1, j1, u2, j2

    @numba.njit(cache=True, nogil=True)
    def _row_reduction(indptr, indices, cost, price, col_of, row_of, free, n_free, spread):
        """One augmenting-row-reduction pass over ``free[:n_free]``; returns how many rows are still free
        (listed at the front of ``free``). ``spread`` replaces a missing second-best for single-edge rows."""
        k = 0
        n_left = 0
        steps = 0
        limit = 4 * (indptr.size + n_free)  # guards against long exchanges among near-ties
        while k < n_free:
            i = free[k]
            k += 1
            steps += 1
            u1, j1, u2, j2 = _two_best(indptr, indices, cost, price, i)
            if j1 < 0:  # a row with no edge: left for the augmentation to report
                free[n_left] = i
                n_left += 1
                continue
            if j2 < 0:
                u2 = u1 + spread
            i0 = row_of[j1]
            if u1 < u2:
                price[j1] -= u2 - u1
            elif i0 >= 0:
                j1, i0 = j2, row_of[j2]
            col_of[i] = j1
            row_of[j1] = i
            if i0 >= 0:
                col_of[i0] = -1
                if u1 < u2 and steps < limit:
                    k -= 1
                    free[k] = i0
                else:
                    free[n_left] = i0
                    n_left += 1
        return n_left

    @numba.njit(cache=True, nogil=True, inline="always")
    def _put(heap, pos, at, j):
        """Store column ``j`` at heap slot ``at`` and remember where it is."""
        heap[at] = j
        pos[j] = at

    @numba.njit(cache=True, nogil=True)
    def _sift_up(heap, pos, key, at):
        """Move ``heap[at]`` up until its parent's ``key`` is no larger (``pos[j]``: where column j sits)."""
        j = heap[at]
        while at > 0:
            parent = (at - 1) >> 1
            if key[heap[parent]] <= key[j]:
                break
            _put(heap, pos, at, heap[parent])
            at = parent
        _put(heap, pos, at, j)

    @numba.njit(cache=True, nogil=True)
    def _pop_min(heap, pos, key, size):
        """Remove and return the column with the smallest ``key`` from a heap of ``size`` columns."""
        top = heap[0]
        pos[top] = -1
        size -= 1
        if size == 0:
            return top
        j = heap[size]
        at = 0
        while True:
            child = 2 * at + 1
            if child >= size:
                break
            if child + 1 < size and key[heap[child + 1]] < key[heap[child]]:
                child += 1
            if key[j] <= key[heap[child]]:
                break
            _put(heap, pos, at, heap[child])
            at = child
        _put(heap, pos, at, j)
        return top

    @numba.njit(cache=True, nogil=True)
    def _augment(indptr, indices, cost, price, row_price, col_of, row_of, start, dist, done, pred, touched,
                 heap, pos):
        """Match free row ``start`` along a shortest augmenting path (Dijkstra on reduced costs, over the
        columns it reaches only); False if it reaches no free column."""
        u = np.inf
        for e in range(indptr[start], indptr[start + 1]):
            u = min(u, cost[e] - price[indices[e]])
        row_price[start] = u
        n_touched = 0
        size = 0
        bound = np.inf  # shortest distance to a free column seen so far: longer paths are not followed
        i, d = start, 0.0
        sink = -1
        while True:
            ui = row_price[i]
            for e in range(indptr[i], indptr[i + 1]):
                j2 = indices[e]
                if done[j2]:
                    continue
                nd = d + max(0.0, cost[e] - ui - price[j2])
                if nd < dist[j2] and nd <= bound:
                    if dist[j2] == np.inf:
                        touched[n_touched] = j2
                        n_touched += 1
                    dist[j2] = nd
                    pred[j2] = i
                    if row_of[j2] < 0:
                        bound = nd
                    if pos[j2] < 0:
                        heap[size] = j2
                        size += 1
                        _sift_up(heap, pos, dist, size - 1)
                    else:
                        _sift_up(heap, pos, dist, pos[j2])
            if size == 0:
                break
            j = _pop_min(heap, pos, dist, size)
            size -= 1
            done[j] = True
            d = dist[j]
            i = row_of[j]
            if i < 0:
                sink = j
                break
        while size > 0:  # clear what is left in the heap
            size -= 1
            pos[heap[size]] = -1
        if sink >= 0:
            reach = dist[sink]
            for t in range(n_touched):  # dual update on the columns settled before the sink
                j = touched[t]
                if done[j] and j != sink:
                    shift = reach - dist[j]
                    price[j] -= shift
                    row_price[row_of[j]] += shift
            row_price[start] += reach
            j = sink
            while True:
                i = pred[j]
                nxt = col_of[i]
                col_of[i] = j
                row_of[j] = i
                if i == start:
                    break
                j = nxt
        for t in range(n_touched):
            j = touched[t]
            dist[j] = np.inf
            done[j] = False
        return sink >= 0

    @numba.njit(cache=True, nogil=True)
    def _edge_cost(indptr, indices, cost, i, j):
        """Cost of edge (i, j) (inf if absent)."""
        for e in range(indptr[i], indptr[i + 1]):
            if indices[e] == j:
                return cost[e]
        return np.inf

    @numba.njit(cache=True, nogil=True)
    def _solve(indptr, indices, cost, n_cols, spread):
        n_rows = indptr.size - 1
        price = np.zeros(n_cols)
        col_of = np.full(n_rows, -1, dtype=np.int64)
        row_of = np.full(n_cols, -1, dtype=np.int64)
        free = np.arange(n_rows)
        n_free = n_rows
        for _ in range(_ARR_PASSES):
            n_free = _row_reduction(indptr, indices, cost, price, col_of, row_of, free, n_free, spread)
        row_price = np.zeros(n_rows)
        for i in range(n_rows):
            j = col_of[i]
            if j >= 0:
                row_price[i] = _edge_cost(indptr, indices, cost, i, j) - price[j]
        if n_cols == n_rows:  # square: no sign constraint on prices, so raise each free column's to its
            # cheapest edge from a matched row (still dual-feasible; that edge becomes tight)
            best = np.full(n_cols, np.inf)
            for i in range(n_rows):
                if col_of[i] >= 0:
                    for e in range(indptr[i], indptr[i + 1]):
                        j = indices[e]
                        if row_of[j] < 0:
                            best[j] = min(best[j], cost[e] - row_price[i])
            for j in range(n_cols):
                if row_of[j] < 0 and best[j] < np.inf:
                    price[j] = best[j]
        dist = np.full(n_cols, np.inf)
        done = np.zeros(n_cols, dtype=np.bool_)
        pred = np.full(n_cols, -1, dtype=np.int64)
        touched = np.empty(n_cols, dtype=np.int64)
        heap = np.empty(n_cols, dtype=np.int64)
        pos = np.full(n_cols, -1, dtype=np.int64)
        for t in range(n_free):
            if not _augment(indptr, indices, cost, price, row_price, col_of, row_of, free[t], dist, done, pred,
                            touched, heap, pos):
                return col_of, False
        return col_of, True


def min_cost_full_matching(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimum total ``cost`` matching that covers the smaller side of a sparse bipartite graph.

    Edges ``(rows[e], cols[e])`` with float ``cost[e]`` ([m] each, no duplicate pairs) between ``n_a`` rows and
    ``n_b`` columns. Returns ``(r, c)``: matched row and column indices, ``min(n_a, n_b)`` of each. Raises
    ``ValueError`` when no matching covers the smaller side.
    """
    if not HAVE_NUMBA:
        graph = sp.csr_matrix((cost - cost.min() + 1.0, (rows, cols)), shape=(n_a, n_b))  # positive: none dropped
        return min_weight_full_bipartite_matching(graph)
    transpose = n_a > n_b
    if transpose:
        rows, cols, n_a, n_b = cols, rows, n_b, n_a
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    cost = np.asarray(cost, dtype=np.float64)
    if rows.size > 1 and bool((rows[1:] < rows[:-1]).any()):  # CSR order needed (unique_edges gives it already)
        order = np.argsort(rows, kind="stable")
        rows, cols, cost = rows[order], cols[order], cost[order]
    indptr = np.zeros(n_a + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_a), out=indptr[1:])
    spread = float(cost.max() - cost.min()) + 1.0 if cost.size else 1.0
    col_of, ok = _solve(indptr, np.ascontiguousarray(cols), np.ascontiguousarray(cost), n_b, spread)
    if not ok:
        raise ValueError("no full matching exists in the candidate graph")
    r = np.arange(n_a)
    return (col_of, r) if transpose else (r, col_of)
