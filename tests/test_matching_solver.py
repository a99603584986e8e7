"""The compiled pieces of sparse-Hungarian: bf16 and float32 row top-k, pair dot products, and the sparse assignment solver."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from universality.matching import _lap, _select
from universality.matching._lap import min_cost_full_matching
from universality.matching._select import pair_dots, row_topk_bf16, row_topk_f32


@pytest.mark.parametrize("width,k", [(100, 5), (2100, 36), (5000, 36), (4160, 1), (70, 70)])
@pytest.mark.parametrize("threads", [None, 1])
def test_row_topk_bf16_selects_the_exact_largest_values(width, k, threads):
    gen = torch.Generator().manual_seed(width + k)
    block = torch.randn(40, width, generator=gen).bfloat16()
    block[3] = -block[3].abs()  # a row whose k-th best is negative: no bar can be used
    block[5] = (block[5] * 4).round() / 4  # many ties
    block[7, :] = 0.5  # all equal
    idx = row_topk_bf16(block, k, threads=threads)
    assert idx.shape == (40, k)
    assert all(len(set(row.tolist())) == k for row in idx)
    got = block.float().gather(1, idx).sort(1, descending=True).values
    assert torch.equal(got, block.float().topk(k, dim=1).values)


def test_row_topk_without_numba_is_torch_topk(monkeypatch):
    monkeypatch.setattr(_select, "HAVE_NUMBA", False)
    block = torch.randn(8, 300).bfloat16()
    got = block.float().gather(1, row_topk_bf16(block, 4)).sort(1, descending=True).values
    assert torch.equal(got, block.float().topk(4, dim=1).values)


@pytest.mark.parametrize("width,k", [(100, 5), (2100, 36), (5000, 36), (4160, 1), (70, 70), (16384, 8)])
@pytest.mark.parametrize("threads", [None, 1])
def test_row_topk_f32_selects_the_exact_largest_values(width, k, threads):
    gen = torch.Generator().manual_seed(width + k)
    block = torch.randn(40, width, generator=gen)
    block[3] = -block[3].abs()  # a row whose values are all negative
    block[5] = (block[5] * 4).round() / 4  # many ties
    block[7, :] = 0.5  # all equal
    block[9, -3:] = 9.0  # the best entries in the ragged tail after the last whole 64-entry chunk
    idx = row_topk_f32(block, k, threads=threads)
    assert idx.shape == (40, k)
    assert all(len(set(row.tolist())) == k for row in idx)
    got = block.gather(1, idx).sort(1, descending=True).values
    assert torch.equal(got, block.topk(k, dim=1).values)


def test_row_topk_f32_without_numba_is_torch_topk(monkeypatch):
    monkeypatch.setattr(_select, "HAVE_NUMBA", False)
    block = torch.randn(8, 300)
    got = block.gather(1, row_topk_f32(block, 4)).sort(1, descending=True).values
    assert torch.equal(got, block.topk(4, dim=1).values)


def test_row_blocks_are_each_handled_once_by_worker_threads_and_errors_surface():
    import threading

    from universality.matching._blocked import for_each_row_block

    seen, workers = [], set()
    lock = threading.Lock()

    def work(worker, r0, r1):
        with lock:
            seen.append((r0, r1))
            workers.add((worker, threading.get_ident(), torch.get_num_threads()))

    before = torch.get_num_threads()
    for_each_row_block(1000, 96, work, workers=2)
    assert sorted(seen) == [(r, min(1000, r + 96)) for r in range(0, 1000, 96)]
    assert {w for w, _, _ in workers} <= {0, 1} and all(t == 1 for _, _, t in workers)  # single-threaded torch inside
    assert torch.get_num_threads() == before  # restored

    def fail(worker, r0, r1):
        if r0 == 480:
            raise RuntimeError("block 480")

    with pytest.raises(RuntimeError, match="block 480"):
        for_each_row_block(1000, 96, fail, workers=2)
    assert torch.get_num_threads() == before


def test_pair_dots_equal_float64_dot_products():
    rng = np.random.default_rng(0)
    left, right = torch.randn(50, 33), torch.randn(70, 33)
    rows, cols = rng.integers(0, 50, 400), rng.integers(0, 70, 400)
    ref = (left.double()[rows] * right.double()[cols]).sum(1).numpy()
    np.testing.assert_allclose(pair_dots(left, right, rows, cols), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pair_dots(left.double(), right.double(), rows, cols), ref, rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (6, 6), (5, 9), (9, 5), (40, 40), (30, 45)])
def test_dense_graphs_reach_scipy_optimum_with_ties(shape):
    rng = np.random.default_rng(sum(shape))
    for decimals in (0, 1, 6):  # coarse rounding makes many equal costs
        cost = rng.standard_normal(shape).round(decimals)
        rows, cols = np.nonzero(np.ones(shape))
        r, c = min_cost_full_matching(rows, cols, cost[rows, cols], *shape)
        assert len(r) == len(set(r.tolist())) == min(shape) and len(set(c.tolist())) == min(shape)
        a, b = linear_sum_assignment(cost)
        assert cost[r, c].sum() == pytest.approx(cost[a, b].sum(), abs=1e-9)


@pytest.mark.parametrize("n,degree,rect", [(3000, 12, 0), (4000, 30, 0), (2500, 10, 300)])
def test_sparse_graphs_reach_scipy_optimum(n, degree, rect):
    rng = np.random.default_rng(n)
    n_b = n + rect
    rows = np.repeat(np.arange(n), degree)
    cols = rng.integers(0, n_b, rows.size)
    diag = np.arange(n)  # a full matching exists
    key = np.unique(np.concatenate([rows * n_b + cols, diag * n_b + diag]))
    rows, cols = key // n_b, key % n_b
    cost = rng.random(rows.size)
    r, c = min_cost_full_matching(rows, cols, cost, n, n_b)
    graph = sp.csr_matrix((cost, (rows, cols)), shape=(n, n_b))
    a, b = min_weight_full_bipartite_matching(sp.csr_matrix((cost + 1.0, (rows, cols)), shape=(n, n_b)))
    assert np.asarray(graph[r, c]).sum() == pytest.approx(np.asarray(graph[a, b]).sum(), rel=1e-12)
    assert len(set(c.tolist())) == n
    # transposed (more rows than columns): the same optimum
    r2, c2 = min_cost_full_matching(cols, rows, cost, n_b, n)
    assert np.asarray(graph[c2, r2]).sum() == pytest.approx(np.asarray(graph[a, b]).sum(), rel=1e-12)


def test_graph_without_full_matching_raises():
    # rows 0 and 1 can only use column 0
    rows, cols = np.array([0, 1, 2, 2]), np.array([0, 0, 1, 2])
    with pytest.raises(ValueError):
        min_cost_full_matching(rows, cols, np.ones(4), 3, 3)
    with pytest.raises(ValueError):  # a row with no edge at all
        min_cost_full_matching(np.array([0, 1]), np.array([0, 1]), np.ones(2), 3, 3)


def test_solver_without_numba_is_scipys(monkeypatch):
    monkeypatch.setattr(_lap, "HAVE_NUMBA", False)
    cost = np.random.default_rng(2).standard_normal((7, 9))
    rows, cols = np.nonzero(np.ones((7, 9)))
    r, c = min_cost_full_matching(rows, cols, cost[rows, cols], 7, 9)
    a, b = linear_sum_assignment(cost)
    assert cost[r, c].sum() == pytest.approx(cost[a, b].sum(), abs=1e-12)
