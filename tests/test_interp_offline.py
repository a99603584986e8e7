"""Offline explanations against planted ground truth: token features are named and detected, random latents sit at chance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interp_helpers import PLANTED, planted_activations, planted_stream, table
from universality.interp import ContextConfig, LatentActivations, explain_dictionary, sample_contexts
from universality.interp.contexts import ContextSet, decoder_neighbours
from universality.interp.delphi_format import read_explanations, read_scores
from universality.interp.scoring import _auc, classification_metrics
from universality.interp.tokenstats import PREFIX, parse_terms, render, Term


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    acts = planted_activations()
    out = tmp_path_factory.mktemp("explain")
    res = explain_dictionary(acts, table(), module="toy.blocks.0.resid_post", out=out)
    return acts, res, out


def test_planted_token_features_are_named_and_detected(run):
    acts, res, _ = run
    tab = table()
    for j, ids in PLANTED.items():
        r = res.latents[j]
        assert r.explanation.startswith(PREFIX)  # says what it is
        named = {t[0] for t in parse_terms(r.explanation)}
        assert named == {tab.texts[i] for i in ids}, (j, r.explanation)
        assert r.scores["detection"]["balanced_accuracy"] >= 0.9
        assert r.scores["fuzz"]["balanced_accuracy"] >= 0.9


def test_random_latents_score_at_chance(run):
    _, res, _ = run
    rand = [r.scores["detection"]["balanced_accuracy"] for j, r in res.latents.items() if j not in PLANTED]
    assert len(rand) >= 30
    assert abs(float(np.mean(rand)) - 0.5) <= 0.1
    auc = [r.scores["detection"]["auc"] for j, r in res.latents.items() if j not in PLANTED]
    assert abs(float(np.mean(auc)) - 0.5) <= 0.1


def test_delphi_layout_round_trips(run):
    _, res, out = run
    expl = read_explanations(out, "toy.blocks.0.resid_post")
    assert expl == {j: r.explanation for j, r in res.latents.items()}
    det = read_scores(out, "toy.blocks.0.resid_post", "detection")
    rec = det[0]
    assert set(rec[0]) == {"str_tokens", "activations", "distance", "activating", "prediction", "probability", "correct"}
    # the file name is what delphi parses: the integer after the last "latent"
    f = next((out / "scores" / "fuzz").glob("*_latent3.txt"))
    assert int(f.stem.split("latent")[-1]) == 3
    # metrics recomputed from the written records match the result (delphi recomputes them from these files)
    lab = [r["activating"] for r in rec]
    prob = [r["probability"] for r in rec]
    assert classification_metrics(lab, prob) == res.latents[0].scores["detection"]
    assert json.loads((out / "explanations" / "toy.blocks.0.resid_post_latent0.txt").read_text()) == res.latents[0].explanation


def test_contexts_are_seeded_held_out_and_cached(tmp_path):
    acts = planted_activations()
    cfg = ContextConfig(seed=3)
    a = sample_contexts(acts, [0, 5], cfg)
    b = sample_contexts(acts, [5], cfg)
    c0 = a.latents[5]
    assert np.array_equal(c0.test.ids, b.latents[5].test.ids)  # a latent's draw does not depend on the others
    assert c0.train.acts.max(axis=1).min() > 0 and c0.test.acts.max(axis=1).min() > 0
    assert (c0.random.acts == 0).all()
    # held out: no test window is a train window
    tr = {tuple(r) for r in c0.train.ids}
    assert not any(tuple(r) in tr for r in c0.test.ids)
    a.save(tmp_path / "c.safetensors", {"key": "k"})
    back, meta = ContextSet.load(tmp_path / "c.safetensors")
    assert meta == {"key": "k"} and sorted(back.latents) == sorted(a.latents)
    assert np.array_equal(back.latents[5].test.acts, c0.test.acts)


def test_neighbour_negatives_are_hard_and_silent():
    # latent 40 duplicates planted latent 0's decoder direction: its windows are 0's hard negatives
    t, m, codes = planted_stream(extra={4: (5,)})
    acts = LatentActivations(codes, t, m)
    w = np.random.default_rng(0).standard_normal((acts.n_latents, 16))
    w[4] = w[0] + 0.01
    nb = decoder_neighbours(w, 3)
    assert nb[0, 0] == 4 and nb[4, 0] == 0
    c = sample_contexts(acts, [0], ContextConfig(), nb).latents[0]
    assert len(c.neighbour) > 0 and (c.neighbour.acts == 0).all()


def test_auc_matches_pairwise_count():
    rng = np.random.default_rng(1)
    lab = rng.random(200) < 0.4
    s = np.round(rng.random(200) + lab * 0.3, 1)  # ties included
    pos, neg = s[lab], s[~lab]
    ref = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert _auc(lab, s) == pytest.approx(ref, abs=1e-12)


def test_explanation_text_round_trips_quotes_and_pairs():
    terms = (Term(('"q<b>',), 5.0), Term(("of", " the"), 4.0), Term(("x;y",), 3.5))
    assert parse_terms(render(terms)) == [('"q<b>',), ("of", " the"), ("x;y",)]
