"""MPPC against an independent float64 dense numpy reference (centred Pearson), both paths."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from universality import UniversalityError
from universality.matching import PearsonAccumulator, mppc
from universality.matching import _kernels


def _topk_codes(rng, n, f, k, dtype=np.float32):
    x = np.zeros((n, f), dtype=dtype)
    idx = np.argsort(rng.random((n, f)), axis=1)[:, :k]
    np.put_along_axis(x, idx, (rng.random((n, k)) + 0.1).astype(dtype), axis=1)
    return x


def _reference(a, b):
    """max/argmax of Pearson r over live features, computed centred in float64 (no streaming sums)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    ac, bc = a - a.mean(0), b - b.mean(0)
    na, nb = np.linalg.norm(ac, axis=0), np.linalg.norm(bc, axis=0)
    live_a, live_b = na > 0, nb > 0
    r = (ac[:, live_a].T @ bc[:, live_b]) / np.outer(na[live_a], nb[live_b])
    return r, live_a, live_b


def _check(res, a, b, tol=1e-6):
    r, live_a, live_b = _reference(a, b)
    assert np.array_equal(res.dead_a.numpy(), ~live_a)
    assert np.array_equal(res.dead_b.numpy(), ~live_b)
    got_ab = res.a_to_b.max_r.numpy()
    got_ba = res.b_to_a.max_r.numpy()
    np.testing.assert_allclose(got_ab[live_a], r.max(1), atol=tol, rtol=0)
    np.testing.assert_allclose(got_ba[live_b], r.max(0), atol=tol, rtol=0)
    assert np.isnan(got_ab[~live_a]).all() and (res.a_to_b.argmax.numpy()[~live_a] == -1).all()
    # the argmax attains the maximum in the reference matrix
    cols = np.flatnonzero(live_b)
    pos = np.searchsorted(cols, res.a_to_b.argmax.numpy()[live_a])
    np.testing.assert_allclose(r[np.arange(r.shape[0]), pos], r.max(1), atol=tol)
    rows = np.flatnonzero(live_a)
    pos = np.searchsorted(rows, res.b_to_a.argmax.numpy()[live_b])
    np.testing.assert_allclose(r[pos, np.arange(r.shape[1])], r.max(0), atol=tol)
    np.testing.assert_allclose(res.freq_a.numpy(), (a != 0).mean(0), atol=1e-12)


@pytest.mark.parametrize("path", [True, False])
def test_mppc_matches_float64_reference_with_dead_and_never_cofiring(path):
    rng = np.random.default_rng(0)
    a = _topk_codes(rng, 1500, 120, 6)
    b = _topk_codes(rng, 1500, 90, 5)
    a[:, [3, 50]] = 0  # dead
    b[:, 7] = 0
    # features 10 (A) and 11 (B) fire on disjoint token halves: they never co-fire, r < 0 is exact
    a[:750, 10] = 0
    a[750:, 10] = np.where(rng.random(750) < 0.3, 1.0, 0.0)
    b[:, 11] = 0
    b[:750, 11] = np.where(rng.random(750) < 0.3, 2.0, 0.0)
    # B's 20 is a noisy copy of A's 30 so the maxima are not all tiny
    b[:, 20] = a[:, 30] * 1.5 + (rng.random(1500) < 0.05)
    res = mppc(torch.from_numpy(a), torch.from_numpy(b), sparse=path)
    assert res.path == ("sparse" if path else "dense")
    _check(res, a, b)
    assert res.a_to_b.argmax[30] == 20


def test_only_never_cofiring_partners_gives_exact_negative_r():
    rng = np.random.default_rng(1)
    n = 400
    a = np.zeros((n, 1))
    b = np.zeros((n, 2))
    a[:100, 0] = rng.random(100) + 0.5
    b[100:200, 0] = rng.random(100) + 0.5
    b[200:300, 1] = rng.random(100) + 0.5
    res = mppc(a, b, sparse=True)
    # r = -mu_a mu_b / (sigma_a sigma_b) for disjoint supports, from float64 moments
    mu_a, sd_a = a[:, 0].mean(), a[:, 0].std()
    expect = [-mu_a * b[:, j].mean() / (sd_a * b[:, j].std()) for j in range(2)]
    assert res.a_to_b.max_r[0] < 0
    np.testing.assert_allclose(res.a_to_b.max_r[0], max(expect), atol=1e-12)
    assert res.a_to_b.argmax[0] == int(np.argmax(expect))
    np.testing.assert_allclose(res.b_to_a.max_r.numpy(), expect, atol=1e-12)


def test_chunked_stream_equals_whole_and_scipy_fallback(monkeypatch):
    rng = np.random.default_rng(2)
    a = _topk_codes(rng, 3000, 200, 8)
    b = _topk_codes(rng, 3000, 150, 8)
    whole = mppc(a, b, sparse=True)
    chunks = ((sp.csr_matrix(a[s:s + 700]), torch.from_numpy(b[s:s + 700])) for s in range(0, 3000, 700))
    streamed = mppc(chunks)
    np.testing.assert_allclose(streamed.a_to_b.max_r.numpy(), whole.a_to_b.max_r.numpy(), atol=1e-12)
    monkeypatch.setattr(_kernels, "HAVE_NUMBA", False)
    fallback = mppc(a, b, sparse=True)
    np.testing.assert_allclose(fallback.b_to_a.max_r.numpy(), whole.b_to_a.max_r.numpy(), atol=1e-12)
    assert np.array_equal(fallback.b_to_a.argmax.numpy(), whole.b_to_a.argmax.numpy())
    _check(fallback, a, b)


def test_token_weights_equal_repeated_tokens():
    rng = np.random.default_rng(3)
    a = _topk_codes(rng, 300, 40, 4)
    b = _topk_codes(rng, 300, 30, 4)
    w = rng.integers(0, 4, size=300)
    for path in (True, False):
        weighted = mppc(a, b, weights=w.astype(float), sparse=path)
        repeated = np.repeat(np.arange(300), w)
        _check(weighted, a[repeated], b[repeated])


def test_dense_activations_general_signs():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((800, 10))
    a = z @ rng.standard_normal((10, 24)) + 0.1 * rng.standard_normal((800, 24))
    b = z @ rng.standard_normal((10, 16)) + 0.1 * rng.standard_normal((800, 16))
    res = mppc(torch.from_numpy(a), torch.from_numpy(b))
    assert res.path == "dense"
    _check(res, a, b, tol=1e-9)


def test_summary_leaves_out_dead_and_rare():
    rng = np.random.default_rng(5)
    a = _topk_codes(rng, 500, 30, 3)
    a[:, 0] = 0
    b = a.copy()
    res = mppc(a, b)
    s = res.summary("a_to_b")
    assert s.n_features == 29 and abs(s.mean - 1.0) < 1e-9 and s.frac_above[0.9] == 1.0
    rare = res.freq_a.numpy() < 0.1
    assert res.summary("a_to_b", min_freq=0.1).n_features == int((~rare).sum() - (0 if rare[0] else 1))


def test_bad_inputs_raise_one_clear_error():
    a = np.zeros((10, 4))
    with pytest.raises(UniversalityError, match="token counts differ"):
        mppc(iter([(a, np.zeros((9, 4)))]))
    with pytest.raises(UniversalityError, match="different token counts"):
        mppc(a, np.zeros((9, 4)))
    bad = np.ones((10, 4))
    bad[2, 1] = np.nan
    with pytest.raises(UniversalityError, match="NaN"):
        mppc(bad, a)
    with pytest.raises(UniversalityError, match="NaN"):
        mppc(a + np.eye(10, 4), bad, sparse=True)
    with pytest.raises(UniversalityError, match="empty"):
        mppc(iter([]))
    with pytest.raises(UniversalityError, match="empty"):
        mppc(np.zeros((0, 4)), np.zeros((0, 3)))
    with pytest.raises(UniversalityError, match="2-D"):
        mppc(np.zeros(10), np.zeros(10))
    acc = PearsonAccumulator()
    acc.add(np.ones((3, 4)), np.ones((3, 2)))
    with pytest.raises(UniversalityError, match="feature counts changed"):
        acc.add(np.ones((3, 5)), np.ones((3, 2)))
    with pytest.raises(UniversalityError, match="codes_b is missing"):
        mppc(a)
    with pytest.raises(UniversalityError, match="threshold"):
        mppc(np.eye(4), np.eye(4)).summary(thresholds=(1.5,))
