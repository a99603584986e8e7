"""SVCCA / RSA / linear CKA against direct numpy/scipy computations and planted structure."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from universality import UniversalityError
from universality.matching import linear_cka, rsa, svcca, svcca_components


def _paired(rng, n=150, d_a=20, d_b=30, noise=0.1):
    z = rng.standard_normal((n, 8))
    x = z @ rng.standard_normal((8, d_a)) + noise * rng.standard_normal((n, d_a))
    y = z @ rng.standard_normal((8, d_b)) + noise * rng.standard_normal((n, d_b))
    return x, y


def test_svcca_keeps_centred_variance_share_not_one_component_on_unit_norm_decoders():
    rng = np.random.default_rng(0)
    # unit-norm decoder rows sharing a large common direction: uncentred, one component holds most energy
    common = np.zeros(32)
    common[0] = 1.0
    rows = 8.0 * common + rng.standard_normal((200, 32)) * np.linspace(1.0, 0.2, 32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    s_uncentred = np.linalg.svd(rows, compute_uv=False) ** 2
    assert s_uncentred[0] / s_uncentred.sum() > 0.7  # a 'uncentred 70 %' rule would keep a single component
    k = svcca_components(rows, 0.9)
    s = np.linalg.svd(rows - rows.mean(0), compute_uv=False) ** 2
    expect = int(np.argmax(np.cumsum(s) / s.sum() >= 0.9)) + 1
    assert k == expect and k > 10
    res = svcca(rows, rows @ np.linalg.qr(rng.standard_normal((32, 32)))[0], variance_kept=0.9, n_permutations=20)
    assert res.n_components == (k, k)
    assert res.score == pytest.approx(1.0, abs=1e-9)  # a rotation is perfectly canonically correlated


def test_svcca_matches_direct_cca_and_null():
    rng = np.random.default_rng(1)
    x, y = _paired(rng)
    res = svcca(x, y, variance_kept=0.99, n_permutations=200)
    # direct: PCA-reduce each side, CCA via QR of the reduced data
    def reduce(m, k):
        mc = m - m.mean(0)
        u, s, vt = np.linalg.svd(mc, full_matrices=False)
        return mc @ vt[:k].T
    kx, ky = res.n_components
    qx, _ = np.linalg.qr(reduce(x, kx))
    qy, _ = np.linalg.qr(reduce(y, ky))
    direct = np.linalg.svd(qx.T @ qy, compute_uv=False).clip(0, 1).mean()
    assert res.score == pytest.approx(direct, abs=1e-10)
    assert res.p_value <= 1 / 201 + 1e-12 and res.null_mean < res.score
    unrelated = svcca(x, rng.standard_normal((150, 30)), variance_kept=0.99, n_permutations=200)
    assert unrelated.p_value > 0.01


def test_linear_cka_and_rsa_equal_direct_formulas():
    rng = np.random.default_rng(2)
    x, y = _paired(rng, n=80)
    xc, yc = x - x.mean(0), y - y.mean(0)
    direct = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    res = linear_cka(x, y, n_permutations=100)
    assert res.score == pytest.approx(direct, abs=1e-12) and res.p_value < 0.02
    def rdm(m):
        u = m / np.linalg.norm(m, axis=1, keepdims=True)
        return 1 - u @ u.T
    iu = np.triu_indices(80, 1)
    res = rsa(x, y, n_permutations=100, seed=3)
    assert res.score == pytest.approx(spearmanr(rdm(x)[iu], rdm(y)[iu]).statistic, abs=1e-12)
    assert res.p_value < 0.02
    # the null equals rsa under an explicit re-pairing
    perm = np.random.default_rng(4).permutation(80)
    assert rsa(x, y[perm], n_permutations=0).score == pytest.approx(
        spearmanr(rdm(x)[iu], rdm(y[perm])[iu]).statistic, abs=1e-12)


def test_geometry_bad_inputs():
    with pytest.raises(UniversalityError, match="same number"):
        linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(UniversalityError, match="variance_kept"):
        svcca_components(np.eye(4), 1.5)
    with pytest.raises(UniversalityError, match="paired rows"):
        svcca(np.random.default_rng(0).standard_normal((6, 10)), np.random.default_rng(1).standard_normal((6, 10)))
