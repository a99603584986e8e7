"""Layer grids, bootstrap CIs, baseline comparison and N-way families."""

import numpy as np
import pytest
import torch

from universality import UniversalityError
from universality.matching import (bias_bounded_interval, bootstrap_mppc, compare_baselines, feature_families, mppc, mppc_grid,
                                   summary_values)


def _sources(rng, n, f, p=0.1):
    return (rng.random((n, f)) < p) * rng.uniform(0.5, 1.5, (n, f))


def test_grid_cells_equal_individual_results_and_find_planted_depth_map():
    rng = np.random.default_rng(0)
    base = [_sources(rng, 1200, 20) for _ in range(3)]  # layer l of A and of B share sources of depth l
    codes_a = {f"L{l}": base[l][:, rng.permutation(20)] for l in range(3)}
    codes_b = {f"L{l}": np.concatenate([base[l][:, :14], _sources(rng, 1200, 6)], 1) for l in range(3)}
    g = mppc_grid(codes_a, codes_b)
    for i, la in enumerate(codes_a):
        for j, lb in enumerate(codes_b):
            s = mppc(codes_a[la], codes_b[lb]).summary("a_to_b")
            assert g.mean["a_to_b"][i, j] == pytest.approx(s.mean, abs=1e-12)
            assert g.frac_above["a_to_b"][0.9][i, j] == pytest.approx(s.frac_above[0.9])
    assert g.best_match("a_to_b").tolist() == [0, 1, 2]
    assert torch.allclose(torch.diagonal(g.frac_above["a_to_b"][0.9]), torch.full((3,), 14 / 20, dtype=torch.float64))
    assert g.to_dict()["layers_a"] == ["L0", "L1", "L2"]


def test_bootstrap_intervals_contain_estimate_and_reflect_token_noise():
    rng = np.random.default_rng(1)
    s = _sources(rng, 600, 12)
    a = s + 0.3 * _sources(rng, 600, 12)
    b = s[:, ::-1] + 0.3 * _sources(rng, 600, 12)
    ci = bootstrap_mppc(a, b, n_boot=30, seed=0)
    point = summary_values(mppc(a, b))
    assert set(ci) == set(point)
    m = ci["a_to_b.mean"]
    assert m.estimate == pytest.approx(point["a_to_b.mean"])
    assert m.low < m.estimate < m.high and m.high - m.low < 0.2
    # a replicate is an exact MPPC on resampled tokens: check one against explicit row resampling
    w = np.random.default_rng(5).multinomial(600, np.full(600, 1 / 600))
    weighted = mppc(a, b, weights=w.astype(float))
    explicit = mppc(np.repeat(a, w, axis=0), np.repeat(b, w, axis=0))
    np.testing.assert_allclose(weighted.a_to_b.max_r.numpy(), explicit.a_to_b.max_r.numpy(), atol=1e-10)


def test_bias_bounded_intervals_cover_planted_truth_where_percentile_intervals_do_not():
    # A's 20 features are independent sources; B holds noisy copies of the first 10 (known correlation
    # rho_i = 1/sqrt(1 + c_i^2)) and 10 private ones. True a->b MPPC: rho_i for the first 10, 0 for the rest.
    c = np.random.default_rng(123).uniform(0.3, 2.0, 10)
    truth = (1 / np.sqrt(1 + c ** 2)).sum() / 20
    hits = {"bias-bounded": 0, "percentile": 0}
    for rep in range(50):
        rng = np.random.default_rng(rep)
        s = _sources(rng, 400, 20)
        b = np.concatenate([s[:, :10] + c * _sources(rng, 400, 10), _sources(rng, 400, 10)], 1)
        for method in hits:
            iv = bootstrap_mppc(s, b, n_boot=40, level=0.9, seed=rep + 1000, interval=method)["a_to_b.mean"]
            hits[method] += iv.low <= truth <= iv.high
            assert iv.method == method
            if method == "bias-bounded":
                assert iv.bias > 0 and iv.low <= iv.estimate <= iv.high  # resampling reads high; estimate kept inside
    assert hits["bias-bounded"] >= 40  # >= 80 % of nominal-90 % intervals contain the truth (observed 49/50)
    assert hits["percentile"] <= 10  # the plain percentile interval sits above the truth (observed 0/50)


def test_interval_rules_on_known_replicates():
    reps = np.array([1.0, 2.0, 3.0, 4.0, 5.0] * 20)  # mean 3, estimate 2: b* = 1
    pct = bias_bounded_interval(2.0, reps, 0.8, "percentile")
    basic = bias_bounded_interval(2.0, reps, 0.8, "basic")
    bounded = bias_bounded_interval(2.0, reps, 0.8)
    q_lo, q_hi = np.quantile(reps - 3.0, [0.1, 0.9])
    assert (pct.low, pct.high) == pytest.approx((3.0 + q_lo, 3.0 + q_hi))
    assert (basic.low, basic.high) == pytest.approx((2 * 2.0 - pct.high, 2 * 2.0 - pct.low))
    assert (bounded.low, bounded.high) == pytest.approx((2.0 - q_hi - (1 + np.sqrt(2)), 2.0 - q_lo))
    below = bias_bounded_interval(4.0, reps, 0.8)  # b* < 0 (not a max effect): the basic interval
    assert (below.low, below.high) == pytest.approx((8.0 - pct.high, 8.0 - pct.low))
    with pytest.raises(UniversalityError, match="interval"):
        bootstrap_mppc(np.eye(3), np.eye(3), interval="bca")


def test_compare_baselines_normalises_between_floor_and_skyline():
    cmp = compare_baselines({"a_to_b.mean": 0.6}, floor=0.2, skylines={"sae seed": 0.8, "model seed": 1.0})
    assert cmp.normalised == {"sae seed": pytest.approx(2 / 3), "model seed": pytest.approx(0.5)}
    rng = np.random.default_rng(2)
    a = _sources(rng, 300, 8)
    r = mppc(a, a)
    assert compare_baselines(r, floor=0.0, skylines={"self": 1.0}).observed == pytest.approx(1.0)
    with pytest.raises(UniversalityError, match="statistic"):
        compare_baselines({"x": 1.0}, statistic="a_to_b.mean")


def test_families_across_three_hosts_count_planted_structure():
    rng = np.random.default_rng(3)
    n = 3000
    universal = _sources(rng, n, 10)  # in all three hosts
    pair_ab = _sources(rng, n, 5)  # only in A and B
    perm = rng.permutation(10)
    codes = {
        "A": np.concatenate([universal, pair_ab, _sources(rng, n, 4)], 1),
        "B": np.concatenate([pair_ab, universal[:, ::-1], _sources(rng, n, 3)], 1),
        "C": np.concatenate([_sources(rng, n, 6), universal[:, perm], np.zeros((n, 1))], 1),
    }
    fam = feature_families(codes, threshold=0.5)
    assert fam.n_in_all == 10
    assert fam.present_in[2] == 5
    assert fam.n_in_one == 4 + 3 + 6
    assert (fam.labels["C"][-1] == -1).item()  # dead feature belongs to no family
    # universal feature u of A shares its family with its copies in B (reversed) and C (permuted)
    for u in range(10):
        c_pos = 6 + int(np.flatnonzero(perm == u)[0])
        assert fam.labels["A"][u] == fam.labels["B"][5 + 9 - u] == fam.labels["C"][c_pos]
    assert fam.labels["A"][10] == fam.labels["B"][0] != fam.labels["A"][0]
    with pytest.raises(UniversalityError, match="threshold"):
        feature_families(codes, threshold=2.0)


def test_permutation_p_value_counts_ties_and_works_per_cell():
    from universality.matching.stats import permutation_p_value

    null = np.array([0.1, 0.5, 0.9])
    assert float(permutation_p_value(null, 0.5)) == (1 + 2) / (1 + 3)  # 0.5 and 0.9 reach the observed score
    assert float(permutation_p_value(null, 0.95)) == 1 / 4               # the floor: nothing reaches it
    grid = np.stack([np.full((2, 2), v) for v in (0.2, 0.4, 0.6, 0.8)])  # [4 shuffles, 2, 2]
    observed = np.array([[0.1, 0.4], [0.7, 0.9]])
    want = np.array([[(1 + 4) / 5, (1 + 3) / 5], [(1 + 1) / 5, 1 / 5]])
    assert np.array_equal(permutation_p_value(grid, observed), want)
