"""Planted universality end to end: fit a dictionary per space, pair by MPPC, recover the shared fraction and pairs."""

import numpy as np
import pytest
import torch

from universality.matching import mppc
from universality.matching.planted import fit_reference_topk, planted_pair


@pytest.fixture(scope="module")
def planted():
    torch.manual_seed(0)
    p = planted_pair(n_tokens=20000, n_shared=24, n_private_a=16, n_private_b=32, d_a=48, d_b=64, seed=0)
    coder_a = fit_reference_topk(p.x_a, 40, 4, seed=1)
    coder_b = fit_reference_topk(p.x_b, 56, 4, seed=2)
    return p, coder_a, coder_b


def test_planted_shared_fraction_and_pairs_recovered(planted):
    p, coder_a, coder_b = planted
    codes_a, codes_b = coder_a.encode(p.x_a), coder_b.encode(p.x_b)
    r = mppc(codes_a, codes_b, sparse=True)
    dense = mppc(codes_a, codes_b, sparse=False)
    np.testing.assert_allclose(r.a_to_b.max_r.numpy(), dense.a_to_b.max_r.numpy(), atol=1e-9, equal_nan=True)
    live_a, live_b = ~r.dead_a, ~r.dead_b
    est_a = float((r.a_to_b.max_r[live_a] > 0.5).double().mean())
    est_b = float((r.b_to_a.max_r[live_b] > 0.5).double().mean())
    assert abs(est_a - p.shared_fraction_a) <= 0.05
    assert abs(est_b - p.shared_fraction_b) <= 0.05
    # ground truth identity of each latent: the planted direction its decoder row is closest to
    truth_a = (coder_a.W_dec @ p.directions_a.T).argmax(1)
    truth_b = (coder_b.W_dec @ p.directions_b.T).argmax(1)
    right = 0
    for s in range(p.n_shared):
        latents = torch.nonzero(truth_a == s).ravel()
        if latents.numel() == 0:
            continue  # not learned: counts as wrong
        i = latents[(coder_a.W_dec[latents] @ p.directions_a[s]).argmax()]
        right += int(truth_b[r.a_to_b.argmax[i]] == s)
    assert right / p.n_shared >= 0.9
