"""Induction rows of the depth map: the localised pair of two hosts that share a planted induction circuit is picked,
a host without one gets no claim; the statistics agree with the matching module's own MPPC; bad input; the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from universality import UniversalityError, reports
import importlib

im = importlib.import_module("universality.analysis.induction_match")  # the module (the package exports the function by that name)

V = 32


def _host(model, name):
    pytest.importorskip("universality.hosts.mamba")
    from universality.hosts.registry import host_class

    return host_class("mamba")(model, None, name_or_path=name)


@pytest.fixture(scope="module")
def planted():
    """A: the hand-built induction Mamba (conv shift in block 0, induction in block 1's state); B: the same circuit
    built again; N: a randomly initialised Mamba of the same shape (no induction). Every localised layer is 1."""
    import transformers as tf

    from universality.analysis.constructed import induction_mamba

    torch.manual_seed(1)
    random = tf.MambaForCausalLM(induction_mamba(V).config).eval()
    hosts = {"a": _host(induction_mamba(V), "a"), "b": _host(induction_mamba(V), "b"), "null": _host(random, "null")}
    return im.induction_match(hosts, {"a": 1, "b": 1, "null": 1}, hook="mixer_out", n_rows=32, seq_len=32, n_latents=96,
                              k=4, epochs=8, batch_size=256, n_boot=100, n_permutations=39)


def test_planted_pair_is_picked(planted):
    """Both hosts retrieve the next token in block 1's mixer output: the induction row's localised cell (1, 1) is the
    best of its row and column, its margin interval lies above 0, it beats the shuffled-rows null, and a match is claimed."""
    m = next(x for x in planted if x.b == "b")
    assert (m.layer_a, m.layer_b) == (1, 1) and m.induction_latents["a"][1] > 0 and m.induction_latents["b"][1] > 0
    row = m.row("induction")
    assert row.best_in_row and row.best_in_column
    assert row.margin_low > 0 and row.p_value[1][1] < 0.05 and row.values[1][1] > row.null_mean[1][1] + 0.2
    assert row.claim and "a match is claimed" in m.sentence
    assert m.induction_latents["a"][0] == 0  # block 0 only shifts the previous token: nothing differs between copies


def test_host_without_induction_gets_no_claim(planted):
    """A random Mamba has no induction latents to match and its cells sit at the null: nothing is claimed."""
    m = next(x for x in planted if x.b == "null")
    assert not m.row("induction").claim
    assert not m.row("all").claim
    assert "no match is claimed" in m.sentence


def test_scores_match_the_matching_modules_mppc():
    """Per-sequence sums give, at uniform weights, the mean of both directions' MPPC that ``matching.mppc`` computes
    on the same codes; sequence weights equal repeating the sequences."""
    from universality.matching import mppc

    rng = np.random.default_rng(0)
    a = torch.tensor(np.maximum(rng.standard_normal((12, 10, 7)) - 0.8, 0))
    b = torch.tensor(np.maximum(a.numpy() @ rng.standard_normal((7, 5)) + 0.3 * rng.standard_normal((12, 10, 5)), 0))
    st = im._cell_stats(a, b)
    got = im._score(im._weighted(st, np.ones((1, 12)))[0], None, None)
    ref = mppc(a.reshape(-1, 7), b.reshape(-1, 5), sparse=False)
    assert got == pytest.approx((ref.summary("a_to_b").mean + ref.summary("b_to_a").mean) / 2, abs=1e-9)
    w = rng.integers(0, 3, size=12).astype(float)
    rep = torch.cat([x.repeat(int(c), 1, 1) for x, c in zip(a, w)]), torch.cat([x.repeat(int(c), 1, 1) for x, c in zip(b, w)])
    ref_w = mppc(rep[0].reshape(-1, 7), rep[1].reshape(-1, 5), sparse=False)
    got_w = im._score(im._weighted(st, w[None])[0], None, None)
    assert got_w == pytest.approx((ref_w.summary("a_to_b").mean + ref_w.summary("b_to_a").mean) / 2, abs=1e-9)
    ca_t, cb = im._sparse(a.reshape(-1, 7)).T.tocsr(), im._sparse(b.reshape(-1, 5))
    perm = rng.permutation(12)  # the null re-pairs sequences: the same r as pairing them by hand
    by_hand = mppc(a.reshape(-1, 7), b[torch.as_tensor(perm)].reshape(-1, 5), sparse=False)
    got_p = im._score(im._shuffled(ca_t, cb, perm, st), None, None)
    assert got_p == pytest.approx((by_hand.summary("a_to_b").mean + by_hand.summary("b_to_a").mean) / 2, abs=1e-9)


def test_induction_latents_pick_second_copy_latents():
    """A latent that fires only on the second copy is kept, one that fires alike on both copies is not."""
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(40, 16, 4, generator=g) * (torch.rand(40, 16, 4, generator=g) < 0.3)
    codes[:, :8, 2] = 0.0  # latent 2: silent on the first copy
    idx, t = im.induction_latents(codes, torch.ones(40, dtype=torch.bool), n=4)
    assert list(idx) == [2] and t[2] > 4


def test_bad_input_is_one_sentence():
    from universality.analysis.constructed import induction_mamba

    a = _host(induction_mamba(V), "a")
    with pytest.raises(UniversalityError, match="at least two hosts"):
        im.induction_match({"a": a})
    with pytest.raises(UniversalityError, match="share one vocabulary"):
        im.induction_match({"a": a, "b": _host(induction_mamba(8), "b")})
    with pytest.raises(UniversalityError, match="seq_len must be an even number"):
        im.induction_mix(None, 4, 7, V, 0)
    with pytest.raises(UniversalityError, match="n_boot must be a positive integer"):
        im.induction_match({"a": a, "b": a}, n_boot=0)


def test_report_row_and_round_trip(tmp_path):
    """A record renders as a table with the localised pair starred, its sentence in the summary, a CSV row per cell,
    and survives results.json; a record without its rows is refused."""
    from universality.results import RunResults

    row = im.MatchRow("induction", [[0.1, 0.2], [0.15, 0.8]], [[0.05, 0.1], [0.1, 0.7]], [[0.2, 0.3], [0.2, 0.85]],
                      [[0.05, 0.05], [0.05, 0.06]], [[0.3, 0.1], [0.2, 0.05]], True, True, 0.6, 0.5, 0.7, True)
    m = im.InductionMatch("transformer", "mamba", "transformer", "mamba", "mixer_out", [0, 1], [0, 1], 1, 1,
                          [row], 64, 4096, 100, 19, 16)
    m.sentence = im.match_sentence(m)
    res = reports.example_results(n_features=32)
    res["induction_match"] = [m.to_dict()]
    files = reports.write_report(tmp_path, res)
    html = files.html.read_text()
    assert "a row of the depth map" in html and "transformer L1 × mamba L1 ★" in html and "0.80 [0.70, 0.85]" in html
    assert m.sentence in files.markdown.read_text() and "a match is claimed" in m.sentence
    assert len((tmp_path / "tables" / "induction_match.csv").read_text().splitlines()) == 5
    back = RunResults.from_dict(RunResults.from_dict(res).to_dict()).induction_match[0]
    assert back.row("induction").values == row.values and back.layer_b == 1
    with pytest.raises(UniversalityError, match=r"induction_match\[0\].rows"):
        reports.write_report(tmp_path / "bad", dict(res, induction_match=[{"a": "t", "b": "m", "layers_a": [0], "layers_b": [0]}]))
