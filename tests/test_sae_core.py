"""Core pieces of universality.sae checked against independent dense / float64 / scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from universality import UniversalityError, sae
from universality.sae.sparse_ops import SelectedPreacts, sparse_decode, topk_pairs


def _dense_topk_loss(x, W_enc, b_enc, W_dec, b_dec, k):
    """Reference TopK autoencoder loss with plain autograd (dense codes)."""
    pre = (x - b_dec) @ W_enc.T + b_enc
    vals, idx = pre.topk(k, dim=1)
    codes = torch.zeros_like(pre).scatter(1, idx, vals.relu())
    recon = codes @ W_dec + b_dec
    return (recon - x).pow(2).sum()


def test_sparse_topk_backward_matches_dense_autograd():
    g = torch.Generator().manual_seed(1)
    b, d, n, k = 37, 12, 50, 6
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    params = [torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64) * 0.1,
              torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64) * 0.1]
    ref = [p.clone().requires_grad_() for p in params]
    _dense_topk_loss(x, *ref, k).backward()

    W_enc, b_enc, W_dec, b_dec = [p.clone().requires_grad_() for p in params]
    xc = x - b_dec
    with torch.no_grad():
        pre = xc @ W_enc.T + b_enc
        pairs, vals = topk_pairs(pre, k)
    acts = SelectedPreacts.apply(xc, W_enc, b_enc, pairs, vals).relu()
    recon = sparse_decode(pairs, acts, W_dec) + b_dec
    (recon - x).pow(2).sum().backward()
    for got, want in zip((W_enc, b_enc, W_dec, b_dec), ref):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-9, atol=1e-9)


def test_training_step_gradients_match_dense_reference():
    """The TopK coder's training loss (AuxK off) has the gradient of the dense reference loss."""
    cfg = sae.CoderConfig(kind="topk", d_in=10, n_latents=40, k=4, seed=3, aux_coefficient=0.0)
    coder = sae.build_coder(cfg).double()
    with torch.no_grad():
        coder.b_dec.normal_(0, 0.1)
        coder.b_enc.normal_(0, 0.1)
    x = torch.randn(25, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = coder.training_step(x, x, None, 1.0)
    out.loss.backward()
    ref = [p.detach().clone().requires_grad_() for p in (coder.W_enc, coder.b_enc, coder.W_dec, coder.b_dec)]
    (_dense_topk_loss(x, *ref, 4) / x.numel()).backward()
    for p, r in zip((coder.W_enc, coder.b_enc, coder.W_dec, coder.b_dec), ref):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-9, atol=1e-12)


def test_geometric_median_matches_scipy():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    pts = rng.standard_normal((200, 5)) + rng.standard_normal((1, 5)) * 3
    pts[:10] += 40  # outliers pull the mean, not the median
    want = minimize(lambda y: np.linalg.norm(pts - y, axis=1).sum(), pts.mean(0), method="Nelder-Mead",
                    options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 40000, "maxfev": 40000}).x
    got = sae.geometric_median(torch.tensor(pts, dtype=torch.float32), iters=500, tol=1e-10).double().numpy()
    assert np.abs(got - want).max() < 1e-3
    assert np.abs(pts.mean(0) - want).max() > 0.5  # the mean is a different point


def test_evaluate_matches_float64_numpy():
    coder = sae.build_coder(sae.CoderConfig(kind="relu", d_in=8, n_latents=30, seed=2))
    with torch.no_grad():
        coder.b_enc.fill_(-0.3)
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0)) * 2 + 1
    m = sae.evaluate(coder, x, batch_size=64)
    xs = x.double().numpy()
    W_enc, b_enc = coder.W_enc.detach().double().numpy(), coder.b_enc.detach().double().numpy()
    W_dec, b_dec = coder.W_dec.detach().double().numpy(), coder.b_dec.detach().double().numpy()
    codes = np.maximum((xs - b_dec) @ W_enc.T + b_enc, 0)
    recon = codes @ W_dec + b_dec
    fvu = ((xs - recon) ** 2).sum() / ((xs - xs.mean(0)) ** 2).sum()
    ev = (1 - (xs - recon).var(0) / xs.var(0)).mean()
    freq = (codes > 0).mean(0)
    assert m.fvu == pytest.approx(fvu, rel=1e-4)
    assert m.explained_variance == pytest.approx(ev, rel=1e-4, abs=1e-5)
    assert m.l0 == pytest.approx((codes > 0).sum(1).mean(), rel=1e-6)
    assert m.dead_fraction == pytest.approx((freq == 0).mean())
    assert m.dense_fraction == pytest.approx((freq > 0.1).mean())
    assert m.n_tokens == 500


def test_encode_decode_shapes_and_normalisation():
    coder = sae.build_coder(sae.CoderConfig(kind="topk", d_in=6, n_latents=20, k=3, input_scale=2.0, output_scale=2.0))
    x = torch.randn(2, 5, 6)
    codes = coder.encode(x)
    assert codes.shape == (2, 5, 20)
    assert ((codes > 0).sum(-1) <= 3).all()
    # reference: pre = (2x - b_dec) W_enc^T + b_enc, top-3 with ReLU, recon = (codes W_dec + b_dec) / 2
    xn = x.reshape(-1, 6) * 2.0
    pre = (xn - coder.b_dec) @ coder.W_enc.T + coder.b_enc
    v, i = pre.topk(3, dim=1)
    ref = torch.zeros_like(pre).scatter(1, i, v.relu())
    torch.testing.assert_close(codes.reshape(-1, 20), ref.detach())
    torch.testing.assert_close(coder.decode(codes).reshape(-1, 6), ((ref @ coder.W_dec + coder.b_dec) / 2.0).detach())
    assert coder.W_enc.shape == (20, 6) and coder.W_dec.shape == (20, 6) and coder.b_dec.shape == (6,)


def test_trainer_several_coders_one_pass_equal_separate_runs():
    """Dictionaries trained together from the same batches equal the same dictionaries trained alone."""
    x = torch.randn(3000, 16, generator=torch.Generator().manual_seed(7))
    cfgs = [sae.CoderConfig(kind="topk", d_in=16, n_latents=32, k=4, seed=s) for s in (0, 1)] + [
        sae.CoderConfig(kind="relu", d_in=16, n_latents=24, seed=2)]
    common = dict(batch_size=256, n_tokens=256 * 12, device="cpu", seed=11)
    together = sae.Trainer(sae.TrainerConfig(coders=cfgs, **common)).fit(x)
    assert together.n_steps == 12
    for i, c in enumerate(cfgs):
        alone = sae.Trainer(sae.TrainerConfig(coders=[c], **common)).fit(x)
        for name, t in alone.coders[0].state_dict().items():
            torch.testing.assert_close(together.coders[i].state_dict()[name], t, rtol=1e-5, atol=1e-6)
    # different seeds give different dictionaries
    assert not torch.allclose(together.coders[0].W_dec, together.coders[1].W_dec)
    # decoder rows stay unit norm for topk
    torch.testing.assert_close(together.coders[0].W_dec.norm(dim=1), torch.ones(32), rtol=1e-5, atol=1e-5)
    assert {r["coder"] for r in together.history} == {0, 1, 2}


def test_stream_sources_give_the_same_batches():
    x = torch.randn(1024, 8, generator=torch.Generator().manual_seed(0))
    chunks = list(x.split(100))  # uneven chunks are re-cut into batches of 128

    class Store:
        def batches(self, batch_size, shuffle=True, seed=0):
            return iter(chunks)

    outs = []
    for src in (chunks, lambda: iter(chunks), Store()):
        s = sae.BatchStream(src, 128)
        got = [b[0] for b in s]
        assert [g.shape[0] for g in got] == [128] * 8
        outs.append(torch.cat(got))
    for o in outs:
        torch.testing.assert_close(o, x)
    coder = sae.fit(chunks, kind="topk", n_latents=16, k=2, batch_size=128, device="cpu")
    assert coder.W_enc.shape == (16, 8)


def test_transcoder_with_skip_learns_a_linear_map_through_the_skip():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4000, 12, generator=g)
    A = torch.randn(6, 12, generator=g) / 12**0.5
    y = x @ A.T
    coder = sae.fit(x, target=y, skip=True, kind="topk", n_latents=24, k=2, seed=1, batch_size=256, n_tokens=256 * 300, lr=3e-3, device="cpu")
    assert coder.cfg.transcoder and coder.W_dec.shape == (24, 6) and coder.W_enc.shape == (24, 12)
    assert coder.metrics.fvu < 0.05, coder.metrics
    m = sae.evaluate(coder, x[:500], y[:500])
    assert m.fvu < 0.05


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda x: sae.fit(x, kind="bogus", n_latents=16, k=2), "kind 'bogus'"),
        (lambda x: sae.fit(x, kind="topk", n_latents=16, k=16), "k=16"),
        (lambda x: sae.Trainer(sae.TrainerConfig(coders=[sae.CoderConfig(d_in=5, n_latents=8, k=2)])).fit(x), "d_in=5"),
        (lambda x: sae.fit([c if i != 3 else c * float("nan") for i, c in enumerate(x.split(100))], kind="topk", n_latents=16, k=2,
                           batch_size=100, hook="blocks.0.resid_post", device="cpu"), "step 3"),
        (lambda x: sae.fit("not activations", kind="topk", n_latents=16, k=2), "not usable"),
    ],
)
def test_bad_input_is_one_clear_error(call, fragment):
    x = torch.randn(1000, 8)
    with pytest.raises(UniversalityError) as e:
        call(x)
    assert fragment in str(e.value)


def test_nan_error_names_the_hook():
    x = torch.randn(1000, 8)
    x[250] = float("nan")
    with pytest.raises(UniversalityError, match="blocks.2.mlp_out"):
        sae.fit(x, kind="topk", n_latents=16, k=2, batch_size=100, n_tokens=1000, hook="blocks.2.mlp_out", device="cpu")


def test_sparse_decode_path_equals_dense_matmul():
    """Large, sparse codes are decoded by summing active rows; the result equals the dense matmul."""
    coder = sae.build_coder(sae.CoderConfig(kind="topk", d_in=16, n_latents=512, k=4, output_scale=0.5, input_scale=0.5))
    codes = coder.encode(torch.randn(300, 16))
    assert codes.numel() >= 1 << 16 and (codes != 0).float().mean() < 1 / 16
    want = (codes.double() @ coder.W_dec.detach().double() + coder.b_dec.detach().double()) / 0.5
    torch.testing.assert_close(coder.decode(codes).double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(coder.decode(codes.reshape(3, 100, 512)).reshape(300, 16).double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_step_matches_cpu():
    cfg = sae.CoderConfig(kind="topk", d_in=32, n_latents=256, k=8, seed=0)
    x = torch.randn(512, 32, generator=torch.Generator().manual_seed(0))
    grads = []
    for dev in ("cpu", "cuda"):
        coder = sae.build_coder(cfg).to(dev)
        dead = torch.zeros(256, dtype=torch.bool, device=dev)
        dead[:100] = True
        out = coder.training_step(x.to(dev), x.to(dev), dead, 1.0)
        out.loss.backward()
        grads.append([p.grad.cpu() for p in coder.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


def test_jumprelu_straight_through_gradients_follow_the_rectangle_kernel():
    """d/dθ of sum(g * pre * H(pre - θ)) is -(θ/ε) Σ g·1[|pre-θ|<ε/2]; of sum(H) it is -(1/ε) Σ 1[|pre-θ|<ε/2]."""
    from universality.sae.kinds import _JumpReLU, _Step

    g = torch.Generator().manual_seed(0)
    pre = torch.randn(40, 7, generator=g, dtype=torch.float64).requires_grad_()
    theta = (torch.rand(7, generator=g, dtype=torch.float64) * 0.5 + 0.1).requires_grad_()
    up = torch.randn(40, 7, generator=g, dtype=torch.float64)
    eps = 0.3
    (_JumpReLU.apply(pre, theta, eps) * up).sum().backward()
    P, T, U = pre.detach().numpy(), theta.detach().numpy(), up.numpy()
    near = (np.abs(P - T) < eps / 2).astype(float)
    np.testing.assert_allclose(theta.grad.numpy(), (-(T / eps) * near * U).sum(0), rtol=1e-12)
    np.testing.assert_allclose(pre.grad.numpy(), U * (P > T), rtol=1e-12)
    theta.grad = None
    _Step.apply(pre, theta, eps).sum().backward()
    np.testing.assert_allclose(theta.grad.numpy(), -(near / eps).sum(0), rtol=1e-12)


def test_batchtopk_keeps_k_per_token_on_average_and_learns_a_threshold():
    g = torch.Generator().manual_seed(9)
    atoms = torch.randn(32, 16, generator=g)
    idx = torch.randint(0, 32, (6000, 3), generator=g)
    x = torch.nn.functional.embedding_bag(idx, atoms, per_sample_weights=torch.rand(6000, 3, generator=g) + 0.5, mode="sum")
    coder = sae.fit(x, kind="batchtopk", n_latents=64, k=3, seed=1, batch_size=256, n_tokens=256 * 150, device="cpu")
    xn = x[:256] * coder.cfg.input_scale
    coder.train()
    pairs, vals = coder.select(coder.preacts(xn).detach())
    rows = pairs.rows
    assert rows.numel() == 3 * 256 and bool((rows[1:] >= rows[:-1]).all())
    coder.eval()
    assert float(coder.threshold) > 0
    l0 = float((coder.encode(x[:2000]) > 0).sum(1).float().mean())
    assert 1.5 <= l0 <= 6, l0
    assert coder.metrics.fvu < 0.5, coder.metrics  # a useful reconstruction at the inference threshold (untrained: ~1)
