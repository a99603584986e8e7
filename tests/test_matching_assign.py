"""Assignments against brute force (tiny), scipy (medium) and direct POT calls (OT)."""

import itertools

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from universality import UniversalityError
from universality.matching import assign, cosine_factors, cosine_similarity


def _brute_force(sim):
    n_a, n_b = sim.shape
    best = -np.inf
    if n_a <= n_b:
        for perm in itertools.permutations(range(n_b), n_a):
            best = max(best, sim[np.arange(n_a), list(perm)].sum())
    else:
        for perm in itertools.permutations(range(n_a), n_b):
            best = max(best, sim[list(perm), np.arange(n_b)].sum())
    return best


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 4), (1, 3)])
@pytest.mark.parametrize("method", ["hungarian", "sparse-hungarian"])
def test_tiny_cases_equal_brute_force(shape, method):
    rng = np.random.default_rng(sum(shape))
    for trial in range(3):
        sim = rng.standard_normal(shape)
        m = assign(sim, method, k=2)
        assert m.total == pytest.approx(_brute_force(sim), abs=1e-12)
        assert len(set(m.rows.tolist())) == len(m.rows) == min(shape)
        assert len(set(m.cols.tolist())) == len(m.cols)
        np.testing.assert_allclose(m.scores.numpy(), sim[m.rows.numpy(), m.cols.numpy()])


def test_sparse_hungarian_fallback_when_candidates_have_no_full_matching():
    # every row's and column's single best partner is column/row 0: top-1 graph has no perfect matching
    sim = np.full((4, 4), -1.0)
    sim[:, 0] = 1.0
    sim[0, :] = 1.0
    sim += np.arange(16).reshape(4, 4) * 1e-3
    m = assign(sim, "sparse-hungarian", k=1)
    assert m.fallback
    assert len(set(m.cols.tolist())) == 4
    assert m.total <= _brute_force(sim) + 1e-12


def test_medium_sparse_hungarian_matches_scipy_on_planted_and_random():
    rng = np.random.default_rng(0)
    n, d = 600, 64
    wa = rng.standard_normal((n, d))
    perm = rng.permutation(n)
    wb = wa[perm] + 0.3 * rng.standard_normal((n, d))
    sim = cosine_similarity(wa, wb).numpy()
    r, c = linear_sum_assignment(sim, maximize=True)
    opt = sim[r, c].sum()
    m = assign(cosine_factors(wa, wb), "sparse-hungarian", k=8)
    assert m.total == pytest.approx(opt, rel=1e-5)
    assert (m.cols.numpy() == np.argsort(perm)).mean() > 0.99  # planted permutation recovered
    # random dictionaries: the candidate graph still reaches within 0.01 % of the optimum
    wr = rng.standard_normal((n, d))
    sim = cosine_similarity(wa, wr).numpy()
    r, c = linear_sum_assignment(sim, maximize=True)
    m = assign(cosine_factors(wa, wr), "sparse-hungarian", k=32)
    assert m.total >= sim[r, c].sum() * (1 - 1e-4)
    # rectangular, and with k >= width the result is exactly scipy's optimum
    sim = rng.standard_normal((80, 50))
    r, c = linear_sum_assignment(sim, maximize=True)
    assert assign(torch.from_numpy(sim), "sparse-hungarian", k=80).total == pytest.approx(sim[r, c].sum(), abs=1e-9)
    assert assign(sim, "hungarian").total == pytest.approx(sim[r, c].sum(), abs=1e-9)


def test_ot_methods_equal_direct_pot_calls():
    rng = np.random.default_rng(1)
    sim = rng.random((7, 9))
    a, b = np.full(7, 1 / 7), np.full(9, 1 / 9)
    cost = sim.max() - sim
    expected = {
        "emd": ot.emd(a, b, cost),
        "sinkhorn": ot.sinkhorn(a, b, cost, 0.05, numItermax=1000),
        "unbalanced": ot.unbalanced.sinkhorn_unbalanced(a, b, cost, 0.05, 1.0, numItermax=1000),
    }
    for method, plan in expected.items():
        m = assign(sim, method, reg=0.05, reg_m=1.0)
        np.testing.assert_allclose(m.plan.numpy(), plan, atol=1e-12)
        np.testing.assert_array_equal(m.cols.numpy(), plan.argmax(1))
        np.testing.assert_allclose(m.scores.numpy(), sim[np.arange(7), plan.argmax(1)])
    # square emd is a permutation and reaches the Hungarian optimum
    sq = rng.random((6, 6))
    assert assign(sq, "emd").total == pytest.approx(assign(sq, "hungarian").total, abs=1e-9)


def test_gromov_equals_pot_and_recovers_rotated_permuted_points():
    rng = np.random.default_rng(2)
    xa = rng.standard_normal((12, 5))
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    perm = rng.permutation(12)
    xb = np.concatenate([xa[perm] @ q, np.zeros((12, 2))], axis=1)  # other width, rotated, permuted
    m = assign((xa, xb), "gromov")
    ua = xa / np.linalg.norm(xa, axis=1, keepdims=True)
    ub = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    p = np.full(12, 1 / 12)
    plan = ot.gromov.gromov_wasserstein(1 - ua @ ua.T, 1 - ub @ ub.T, p, p, loss_fun="square_loss", max_iter=1000)
    np.testing.assert_allclose(m.plan.numpy(), plan, atol=1e-12)
    assert (m.cols.numpy() == np.argsort(perm)).mean() >= 0.9


def _planted_and_random(n, d, noise, seed=0):
    rng = np.random.default_rng(seed)
    wa = rng.standard_normal((n, d))
    perm = rng.permutation(n)
    return wa, wa[perm] + noise * rng.standard_normal((n, d)), rng.standard_normal((n, d)), np.argsort(perm)


def _optimum(wa, wb):
    sim = cosine_similarity(wa, wb).numpy()
    r, c = linear_sum_assignment(sim, maximize=True)
    return sim[r, c].sum()


_REPORTED = {"bf16": ("bf16", "bfloat16"), "fp32": ("fp32", "float32"), "projected-bf16": ("projected-bf16", "bfloat16"),
             "projected-fp32": ("projected-fp32", "float32"), "ivf": ("ivf", "float32")}


@pytest.mark.parametrize("search", sorted(_REPORTED))
def test_fast_searches_reach_scipy_optimum_on_planted(search):
    wa, wb, _, partner = _planted_and_random(2100, 64, 0.5)
    m = assign(cosine_factors(wa, wb), "sparse-hungarian", k=16, search=search)
    assert (m.search.search, m.search.precision) == _REPORTED[search] and not m.fallback
    assert m.total == pytest.approx(_optimum(wa, wb), rel=1e-5)
    assert (m.cols.numpy() == partner).mean() > 0.99
    # scores are the float64 cosines of the matched pairs, whatever precision picked the candidates
    ref = cosine_similarity(wa, wb).numpy()[m.rows.numpy(), m.cols.numpy()]
    np.testing.assert_allclose(m.scores.numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("bf16,name,precision", [("1", "bf16", "bfloat16"), ("0", "fp32", "float32")])
def test_auto_search_keeps_projection_on_structure_and_falls_back_to_the_product_on_random(monkeypatch, bf16, name,
                                                                                              precision):
    monkeypatch.setenv("UNIVERSALITY_BF16", bf16)
    wa, wb, wr, _ = _planted_and_random(2100, 256, 0.5)
    planted = assign(cosine_factors(wa, wb), "sparse-hungarian", k=16)
    assert planted.search.tried == (f"projected-{name}(32)",)  # the narrowest projection passes its plan check
    assert planted.search.precision == precision
    assert planted.search.sampled_recall == 1.0 and planted.search.n_sampled == 512
    sim = cosine_similarity(wa, wb).numpy()  # float64: the matched pairs are exactly the optimal ones
    assert sim[planted.rows.numpy(), planted.cols.numpy()].sum() == pytest.approx(_optimum(wa, wb), rel=1e-12)
    rand = assign(cosine_factors(wa, wr), "sparse-hungarian", k=32)
    # the sample shows most best partners far out of reach of the narrow projection: no wider one is tried
    assert rand.search.tried == (f"projected-{name}-plan(32)", name) and rand.search.precision == precision
    assert rand.total >= _optimum(wa, wr) * (1 - 1e-4)
    narrow = assign(cosine_factors(wa[:, :48], wr[:, :48]), "sparse-hungarian", k=8)
    assert narrow.search.tried == (name,)  # factors too narrow for a cheaper projection
    small = assign(cosine_factors(wa[:500], wr[:500]), "sparse-hungarian", k=8)
    assert small.search.search == "exact"


@pytest.mark.parametrize("noise,tried", [(1.3, ("projected-fp32(128)",)),
                                         (1.6, ("projected-fp32-plan(32,64,128)", "fp32"))])
def test_weaker_pairs_need_a_wider_projection_or_the_full_product(monkeypatch, noise, tried):
    monkeypatch.setenv("UNIVERSALITY_BF16", "0")
    wa, wb, _, _ = _planted_and_random(2100, 256, noise)  # partners at cosine 0.61 and 0.53
    m = assign(cosine_factors(wa, wb), "sparse-hungarian", k=16)
    assert m.search.tried == tried
    sim = cosine_similarity(wa, wb).numpy()  # float64: the matched pairs are the optimal ones
    assert sim[m.rows.numpy(), m.cols.numpy()].sum() == pytest.approx(_optimum(wa, wb), rel=1e-12)


def test_float32_paths_reach_scipy_optimum_when_bf16_is_off(monkeypatch):
    monkeypatch.setenv("UNIVERSALITY_BF16", "0")
    wa, wb, wr, partner = _planted_and_random(2500, 256, 0.5, seed=4)
    for other, k in ((wb, 16), (wr, 32)):
        sim = cosine_similarity(wa, other).numpy()
        r, c = linear_sum_assignment(sim, maximize=True)
        for search in ("auto", "fp32", "projected"):
            if search == "projected" and other is wr:
                continue  # the projection is only meant for structured pairs
            m = assign(cosine_factors(wa, other), "sparse-hungarian", k=k, search=search)
            assert m.search.precision == "float32" and "bf16" not in m.search.search
            assert not m.fallback and len(set(m.cols.tolist())) == 2500
            assert sim[m.rows.numpy(), m.cols.numpy()].sum() == pytest.approx(sim[r, c].sum(), rel=1e-12)  # the optimum
            np.testing.assert_allclose(m.scores.numpy(), sim[m.rows.numpy(), m.cols.numpy()], atol=1e-6)


def test_precision_choice_follows_the_override(monkeypatch):
    from universality.matching import candidates

    selected = []
    real = {"bf16": candidates.row_topk_bf16, "f32": candidates.row_topk_f32}

    def spy(kind):
        def select(block, k, **kw):
            selected.append((kind, block.dtype))
            return real[kind](block, k, **kw)
        return select

    monkeypatch.setattr(candidates, "row_topk_bf16", spy("bf16"))
    monkeypatch.setattr(candidates, "row_topk_f32", spy("f32"))
    wa, wb, wr, _ = _planted_and_random(2100, 256, 0.5, seed=5)
    for value, dtype in (("0", torch.float32), ("1", torch.bfloat16), ("0", torch.float32)):
        monkeypatch.setenv("UNIVERSALITY_BF16", value)
        for other in (wb, wr):
            selected.clear()
            for search in ("auto", "projected"):
                m = assign(cosine_factors(wa, other), "sparse-hungarian", k=16, search=search)
                assert m.search.precision == str(dtype).removeprefix("torch.")
            assert selected and {d for _, d in selected} == {dtype}  # every product block ran in that dtype
    # explicit precisions are obeyed whatever the override says
    monkeypatch.setenv("UNIVERSALITY_BF16", "0")
    assert assign(cosine_factors(wa, wr), "sparse-hungarian", k=8, search="bf16").search.precision == "bfloat16"
    monkeypatch.setenv("UNIVERSALITY_BF16", "1")
    assert assign(cosine_factors(wa, wr), "sparse-hungarian", k=8, search="fp32").search.precision == "float32"
    monkeypatch.setenv("UNIVERSALITY_BF16", "2")
    with pytest.raises(UniversalityError, match="UNIVERSALITY_BF16"):
        assign(cosine_factors(wa, wr), "sparse-hungarian", k=8)


def test_projected_graph_is_rejected_when_the_sampled_pairs_are_missing():
    from universality.matching.candidates import Projection, SampledBest

    wa, wb, wr, _ = _planted_and_random(1500, 256, 0.5, seed=1)
    f = cosine_factors(wa, wr)
    proj, sample = Projection(f), SampledBest.draw(f, 200)
    assert not proj.reaches(sample, 8)  # random rows: the projection scrambles the weak best partners
    assert sample.recall(proj.candidates(8)) < 0.9  # and the graph, built anyway, indeed misses them
    planted = cosine_factors(wa, wb)
    assert Projection(planted).reaches(SampledBest.draw(planted, 200), 8)


def test_inverted_file_plan_and_check_see_unreachable_partners():
    from universality.matching.candidates import InvertedFiles, SampledBest

    wa, wb, wr, _ = _planted_and_random(2100, 64, 0.5)
    f = cosine_factors(wa, wb)
    assert InvertedFiles(f).probes_needed(SampledBest.draw(f, 256)) == 8
    f = cosine_factors(wa, wr)
    rand, sample = InvertedFiles(f), SampledBest.draw(f, 256)
    assert rand.probes_needed(sample) is None  # random rows: best partners scattered over all cells
    assert sample.size == 512 and sample.recall(rand.candidates(16, 8)) < 0.9  # built anyway, it misses them


def test_bf16_candidates_are_nearly_the_exact_topk_with_exact_values():
    from universality.matching.candidates import bf16_candidates, sampled_best_recall

    rng = np.random.default_rng(3)
    f = cosine_factors(rng.standard_normal((700, 96)), rng.standard_normal((500, 96)))
    cand = bf16_candidates(f, 10, block_rows=128)
    sim = (f.left.double() @ f.right.double().T).numpy()
    np.testing.assert_allclose(cand.values, sim[cand.rows, cand.cols], atol=1e-6)
    got = set(zip(cand.rows.tolist(), cand.cols.tolist()))
    top = np.argsort(-sim, axis=1)[:, :10]
    found = np.mean([(i, int(j)) in got for i in range(700) for j in top[i]])
    assert found > 0.95  # bfloat16 only swaps near-ties at the k-th place (margin k // 8 absorbs most)
    assert sampled_best_recall(f, cand, 200)[0] == 1.0
    # drop every row's best edge: the sampled check must see it
    best = sim.argmax(1)
    keep = cand.cols != best[cand.rows]
    pruned = type(cand)(cand.rows[keep], cand.cols[keep], cand.values[keep])
    recall, checked = sampled_best_recall(f, pruned, 200)
    assert checked == 400 and recall <= 0.6


def test_fp32_candidates_hold_every_exact_topk_edge():
    from universality.matching.candidates import fp32_candidates

    rng = np.random.default_rng(4)
    f = cosine_factors(rng.standard_normal((700, 96)), rng.standard_normal((500, 96)))
    cand = fp32_candidates(f, 10, block_rows=128)
    sim = (f.left.double() @ f.right.double().T).numpy()
    np.testing.assert_allclose(cand.values, sim[cand.rows, cand.cols], atol=1e-6)
    got = set(zip(cand.rows.tolist(), cand.cols.tolist()))
    top = np.argsort(-sim, axis=1)[:, :10]
    assert all((i, int(j)) in got for i in range(700) for j in top[i])  # float32 picks lose no top-k edge
    assert all(np.bincount(cand.cols, minlength=500) > 0)  # every column has edges


def test_assign_bad_inputs():
    with pytest.raises(UniversalityError, match="method must be one of"):
        assign(np.eye(3), "greedy")
    with pytest.raises(UniversalityError, match="NaN"):
        assign(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(UniversalityError, match="pair"):
        assign(np.eye(3), "gromov")
    with pytest.raises(UniversalityError, match="k must be"):
        assign(np.eye(3), "sparse-hungarian", k=0)
    with pytest.raises(UniversalityError, match="same width"):
        cosine_factors(np.eye(3), np.eye(4))
    with pytest.raises(UniversalityError, match="search must be one of"):
        assign(np.eye(3), "sparse-hungarian", search="lsh")
    with pytest.raises(UniversalityError, match="Factored"):
        assign(np.eye(3), "sparse-hungarian", search="ivf")
    from universality.matching.candidates import Projection, product_candidates, row_picks

    f = cosine_factors(np.eye(3), np.eye(3))
    with pytest.raises(UniversalityError, match="float32 or torch.bfloat16"):
        product_candidates(f, 2, torch.float16)
    with pytest.raises(UniversalityError, match="float32 or torch.bfloat16"):
        Projection(f, 2, dtype=torch.float64)
    with pytest.raises(UniversalityError, match="two float32 or two bfloat16"):
        row_picks(f.left, f.right.bfloat16(), 2)


@pytest.mark.parametrize("order", ["random", "ascending"])
def test_topk_candidates_equal_exact_row_and_column_topk(order):
    from universality.matching import topk_candidates

    rng = np.random.default_rng(7)
    sim = rng.standard_normal((300, 120))
    if order == "ascending":  # the first block holds the worst rows: the column bar starts low
        sim = sim[np.argsort(sim.max(1))] + np.linspace(0, 3, 300)[:, None]
    k = 5
    cand = topk_candidates(sim, k, block_rows=64)
    rows_top = np.argsort(-sim, axis=1)[:, :k]
    cols_top = np.argsort(-sim, axis=0)[:k, :]
    expect = {(i, int(j)) for i in range(300) for j in rows_top[i]} | {(int(i), j) for j in range(120) for i in cols_top[:, j]}
    got = set(zip(cand.rows.tolist(), cand.cols.tolist()))
    assert got == expect
    np.testing.assert_allclose(cand.values, sim[cand.rows, cand.cols])


@pytest.mark.parametrize("search", ["bf16", "fp32", "projected-bf16", "projected-fp32"])
@pytest.mark.parametrize("flip", [False, True])
def test_rectangular_factored_searches_reach_scipy_optimum(search, flip):
    wa, wb, _, _ = _planted_and_random(1500, 256, 0.5, seed=2)
    wb = wb[:1100]  # B holds partners of 1,100 of A's rows
    if flip:
        wa, wb = wb, wa
    m = assign(cosine_factors(wa, wb), "sparse-hungarian", k=16, search=search)
    assert len(m.rows) == 1100 and len(set(m.cols.tolist())) == 1100 and not m.fallback
    sim = cosine_similarity(wa, wb).numpy()
    assert sim[m.rows.numpy(), m.cols.numpy()].sum() == pytest.approx(_optimum(wa, wb), rel=1e-9)
