"""Seed overlap on dictionaries with a planted shared subset; N-seed presence."""

import numpy as np
import pytest
import torch

from universality import UniversalityError
from universality.matching import seed_overlap, seed_presence


class _Coder:
    def __init__(self, enc, dec):
        self.W_enc = torch.as_tensor(enc, dtype=torch.float32)
        self.W_dec = torch.as_tensor(dec, dtype=torch.float32)


def _planted(rng, n=200, d=64, n_shared=120, noise=0.1):
    """Two coders whose first n_shared latents (permuted in B) are noisy copies; the rest are unrelated."""
    enc = rng.standard_normal((n, d))
    dec = rng.standard_normal((n, d))
    perm = rng.permutation(n)
    enc_b = rng.standard_normal((n, d))
    dec_b = rng.standard_normal((n, d))
    enc_b[perm[:n_shared]] = enc[:n_shared] + noise * rng.standard_normal((n_shared, d))
    dec_b[perm[:n_shared]] = dec[:n_shared] + noise * rng.standard_normal((n_shared, d))
    return _Coder(enc, dec), _Coder(enc_b, dec_b), perm


@pytest.mark.parametrize("method", ["hungarian", "sparse-hungarian"])
def test_seed_overlap_recovers_planted_shared_latents(method):
    rng = np.random.default_rng(0)
    a, b, perm = _planted(rng)
    s = seed_overlap(a, b, threshold=0.7, method=method)
    assert s.shared_fraction == pytest.approx(120 / 200)
    assert s.shared[:120].all() and not s.shared[120:].any()
    assert torch.equal(s.pairs[:, 0], torch.arange(120))
    assert torch.equal(s.pairs[:, 1], torch.as_tensor(perm[:120]))
    # matched cosines equal a direct computation on the planted pairs
    da, db = a.W_dec.double().numpy()[:120], b.W_dec.double().numpy()[perm[:120]]
    direct = (da * db).sum(1) / np.linalg.norm(da, axis=1) / np.linalg.norm(db, axis=1)
    np.testing.assert_allclose(s.decoder_cos[:120].numpy(), direct, atol=1e-5)
    assert s.assignments_agree >= 0.6  # shared latents agree; unrelated ones generally do not


def test_shared_needs_both_encoder_and_decoder():
    rng = np.random.default_rng(1)
    a, b, perm = _planted(rng, n_shared=100)
    # break the encoder copies of latents 0..49: decoder still matches, encoder does not
    b.W_enc[torch.as_tensor(perm[:50])] = torch.randn(50, 64)
    s = seed_overlap(a, b)
    assert not s.shared[:50].any() and s.shared[50:100].all()
    assert (s.decoder_cos[:50] > 0.9).all()


def test_raw_matrices_and_rectangular():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((30, 16))
    s = seed_overlap(torch.from_numpy(w), torch.from_numpy(w[::-1].copy()))
    assert s.shared_fraction == 1.0 and s.assignments_agree == 1.0
    s = seed_overlap(w, w[:20])  # A wider than B: ten latents of A stay unmatched
    assert s.shared_fraction == pytest.approx(20 / 30)
    assert torch.isnan(s.decoder_cos).sum() == 10


def test_seed_presence_histogram():
    rng = np.random.default_rng(3)
    d, n = 48, 60
    base = rng.standard_normal((n, d))
    coders = [base]
    for seed_index, keep in enumerate([60, 40, 20]):  # seed m shares latents [0, keep) with the reference
        w = rng.standard_normal((n, d))
        w[:keep] = base[:keep] + 0.05 * rng.standard_normal((keep, d))
        coders.append(w[rng.permutation(n)])
    p = seed_presence(coders)
    expected = np.array([4] * 20 + [3] * 20 + [2] * 20)
    assert np.array_equal(p.counts.numpy(), expected)
    assert p.histogram.tolist() == [0, 0, 20, 20, 20]
    assert p.shared_fraction[0, 1] == pytest.approx(1.0) and p.shared_fraction[0, 3] == pytest.approx(1 / 3)


def test_seed_bad_inputs():
    w = np.eye(4)
    for bad in (1.5, -2):
        with pytest.raises(UniversalityError, match="threshold"):
            seed_overlap(w, w, threshold=bad)
    with pytest.raises(UniversalityError, match="W_enc"):
        seed_overlap("nope", w)
    with pytest.raises(UniversalityError, match="at least two"):
        seed_presence([w])
