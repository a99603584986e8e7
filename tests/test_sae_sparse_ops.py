"""Sparse selection and gradient pieces of universality.sae checked against dense float64 references."""

from __future__ import annotations

import pytest
import torch

from universality import sae
from universality.sae import sparse_ops
from universality.sae.sparse_ops import Pairs, group_topk, preact_topk, uniform_pairs


def _same_sets(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.sort(1).values, b.sort(1).values)


@pytest.mark.parametrize("n,k", [(256, 4), (8192, 32), (1024, 40)])
def test_group_topk_equals_full_topk(n, k):
    g = torch.Generator().manual_seed(n + k)
    pre = torch.randn(300, n, generator=g)
    groups = n // sparse_ops.group_size(n, k)
    assert groups < n  # the grouped path is the one tested
    pre[:, 5] += 10  # several winners inside one strided group
    pre[:, 5 + groups] += 10
    pre[:, 5 + 2 * groups] += 10
    vals, idx = group_topk(pre, k)
    want_vals, want_idx = pre.double().topk(k, dim=1)
    assert _same_sets(idx, want_idx)
    torch.testing.assert_close(vals.double().sort(1).values, want_vals.sort(1).values)


@pytest.mark.parametrize("margin", [32, 0])
def test_bf16_ranked_topk_equals_float64_topk(margin):
    """The bfloat16-ranked selection returns the exact top-k and exact values, near-ties included.

    ``margin=0`` leaves most rows uncertified, so the float32 fallback is exercised too.
    """
    g = torch.Generator().manual_seed(margin)
    b, d, n, k = 200, 64, 2048, 16
    x = torch.randn(b, d, generator=g) * 3
    W = torch.randn(n, d, generator=g) * 0.2
    bias = torch.randn(n, generator=g) * 0.1
    # near-ties below bfloat16 resolution: latent 1 is latent 0 nudged by 1e-4 relative
    W[1] = W[0] * (1 + 1e-4)
    bias[1] = bias[0]
    ref = (x.double() @ W.double().T + bias.double())
    want_vals, want_idx = ref.topk(k, dim=1)
    pairs, vals = preact_topk(x, W, bias, k, margin)
    cols = pairs.cols.view(b, k)
    assert _same_sets(cols, want_idx)
    got = vals.view(b, k).double()
    torch.testing.assert_close(got, ref.gather(1, cols), rtol=1e-5, atol=1e-5)


def test_pairs_products_match_dense_float64():
    g = torch.Generator().manual_seed(3)
    b, n, d = 40, 300, 12
    rows = torch.sort(torch.randint(0, b, (150,), generator=g)).values
    cols = torch.randint(0, n, (150,), generator=g)
    w = torch.randn(150, generator=g, dtype=torch.float64)
    a = torch.randn(b, d, generator=g, dtype=torch.float64)
    table = torch.randn(n, d, generator=g, dtype=torch.float64)
    dense = torch.zeros(b, n, dtype=torch.float64).index_put_((rows, cols), w, accumulate=True)
    p = Pairs(rows, cols, b, n)
    torch.testing.assert_close(p.scatter_rows(w, a), dense.T @ a)
    torch.testing.assert_close(p.gather_sum(w, table), dense @ table)
    torch.testing.assert_close(p.dots(a, table), (a[rows] * table[cols]).sum(1))
    u = uniform_pairs(torch.randint(0, n, (b, 3), generator=g), n)
    assert u.k == 3 and torch.equal(u.rows, torch.arange(b).repeat_interleave(3))


def test_training_step_same_with_and_without_bf16_ranking(monkeypatch):
    """Ranking through bfloat16 changes nothing: same latents, same loss and gradients as the float32 path."""
    cfg = sae.CoderConfig(kind="topk", d_in=64, n_latents=2048, k=8, seed=4)
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(7)) * 2
    dead = torch.zeros(2048, dtype=torch.bool)
    dead[::3] = True  # AuxK on a third of the latents
    grads = []
    for flag in (False, True):
        monkeypatch.setenv("UNIVERSALITY_BF16", str(int(flag)))
        coder = sae.build_coder(cfg)
        out = coder.training_step(x, x, dead, 1.0)
        out.loss.backward()
        grads.append([out.loss.detach()] + [p.grad.clone() for p in (coder.W_enc, coder.b_enc, coder.W_dec, coder.b_dec)])
        assert sparse_ops.bf16_ranking_pays(x, cfg.n_latents, cfg.k) is flag
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
