"""Planted universality: synthetic activation spaces with a known shared fraction, for tests and worked examples.

Two activation spaces of different widths are built from one set of *shared*
sparse sources (the same source values drive a direction in each space) plus
*private* sources of each side. A pipeline that fits a dictionary on each space
and pairs features by MPPC should recover the shared fraction and the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._errors import UniversalityError
from ._inputs import check_positive_int


@dataclass(frozen=True)
class PlantedPair:
    """Two aligned activation spaces and their ground truth."""

    x_a: torch.Tensor
    """[n_tokens, d_a] float32 activations of space A."""
    x_b: torch.Tensor
    """[n_tokens, d_b] float32 activations of space B."""
    directions_a: torch.Tensor
    """[n_shared + n_private_a, d_a] unit ground-truth directions of A; the first ``n_shared`` are shared."""
    directions_b: torch.Tensor
    """[n_shared + n_private_b, d_b] same for B; row s < n_shared is the partner of A's row s."""
    n_shared: int
    """Number of shared features."""

    @property
    def shared_fraction_a(self) -> float:
        """Share of A's ground-truth features that also exist in B."""
        return self.n_shared / self.directions_a.shape[0]

    @property
    def shared_fraction_b(self) -> float:
        """Share of B's ground-truth features that also exist in A."""
        return self.n_shared / self.directions_b.shape[0]


def _directions(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    if n <= d:  # orthonormal when they fit, to keep the example clean
        q, _ = np.linalg.qr(x.T)
        return q.T[:n]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted_pair(*, n_tokens: int = 20000, n_shared: int = 24, n_private_a: int = 16, n_private_b: int = 32,
                 d_a: int = 48, d_b: int = 64, p_active: float = 0.06, noise: float = 0.01, seed: int = 0) -> PlantedPair:
    """Sample a :class:`PlantedPair`: each source is active on a token with probability ``p_active`` with a
    magnitude in [0.5, 1.5]; shared sources drive both spaces, private ones only their own; Gaussian ``noise``."""
    for name, v in (("n_tokens", n_tokens), ("n_shared", n_shared), ("d_a", d_a), ("d_b", d_b)):
        check_positive_int(v, name)
    check_positive_int(n_private_a, "n_private_a", 0)
    check_positive_int(n_private_b, "n_private_b", 0)
    if not 0.0 < p_active < 1.0:
        raise UniversalityError(f"p_active must lie strictly between 0 and 1, got {p_active!r}")
    rng = np.random.default_rng(seed)

    def sources(n: int) -> np.ndarray:
        on = rng.random((n_tokens, n)) < p_active
        return on * rng.uniform(0.5, 1.5, size=(n_tokens, n))

    shared, priv_a, priv_b = sources(n_shared), sources(n_private_a), sources(n_private_b)
    dir_a = _directions(rng, n_shared + n_private_a, d_a)
    dir_b = _directions(rng, n_shared + n_private_b, d_b)
    x_a = np.concatenate([shared, priv_a], 1) @ dir_a + noise * rng.standard_normal((n_tokens, d_a))
    x_b = np.concatenate([shared, priv_b], 1) @ dir_b + noise * rng.standard_normal((n_tokens, d_b))
    f = lambda x: torch.from_numpy(x.astype(np.float32))  # noqa: E731
    return PlantedPair(f(x_a), f(x_b), f(dir_a), f(dir_b), n_shared)


@dataclass
class ReferenceTopK:
    """A minimal TopK dictionary (encoder, decoder, bias) for planted experiments; not a replacement for ``sae.fit``."""

    W_enc: torch.Tensor
    """[n_latents, d] encoder rows."""
    W_dec: torch.Tensor
    """[n_latents, d] unit decoder rows."""
    b_enc: torch.Tensor
    """[n_latents] encoder bias."""
    b_dec: torch.Tensor
    """[d] decoder bias (subtracted before encoding)."""
    k: int
    """Active latents per token."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[n, n_latents] non-negative codes with at most ``k`` non-zeros per row."""
        pre = torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)
        val, idx = pre.topk(self.k, dim=1)
        return torch.zeros_like(pre).scatter_(1, idx, val)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """[n, d] reconstruction."""
        return codes @ self.W_dec + self.b_dec


def fit_reference_topk(x: torch.Tensor, n_latents: int, k: int, *, steps: int = 400, batch: int = 512,
                       lr: float = 1e-2, seed: int = 0) -> ReferenceTopK:
    """Fit a small TopK dictionary to ``x`` [n, d] with Adam on reconstruction MSE (decoder rows kept unit-norm).

    Decoder rows start at randomly chosen (normalised) above-median-norm data rows, which puts them near real features.
    """
    check_positive_int(n_latents, "n_latents")
    check_positive_int(k, "k")
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    d = x.shape[1]
    norms = x.norm(dim=1)
    pool = torch.nonzero(norms > norms.median()).ravel()
    if pool.numel() < n_latents:
        pool = torch.arange(x.shape[0])
    w_dec = x[pool[torch.randperm(pool.numel(), generator=g)[:n_latents]]]
    w_dec = w_dec + 1e-3 * torch.randn(w_dec.shape, generator=g)
    w_dec = torch.nn.Parameter(w_dec / w_dec.norm(dim=1, keepdim=True))
    w_enc = torch.nn.Parameter(w_dec.detach().clone())
    b_enc = torch.nn.Parameter(torch.zeros(n_latents))
    b_dec = torch.nn.Parameter(torch.zeros(d))
    params = [w_dec, w_enc, b_enc, b_dec]
    rounds = 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add overhead
    try:
        _train(x, params, steps, rounds, batch, lr, k, g)
    finally:
        torch.set_num_threads(threads)
    return ReferenceTopK(w_enc.detach(), w_dec.detach(), b_enc.detach(), b_dec.detach(), k)


def _train(x, params, steps, rounds, batch, lr, k, g) -> None:
    w_dec, w_enc, b_enc, b_dec = params
    for r in range(rounds):
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(max(1, steps // rounds)):
            xb = x[torch.randint(0, x.shape[0], (batch,), generator=g)]
            pre = torch.relu((xb - b_dec) @ w_enc.T + b_enc)
            val, idx = pre.topk(k, dim=1)
            codes = torch.zeros_like(pre).scatter(1, idx, val)
            loss = ((codes @ w_dec + b_dec - xb) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                w_dec /= w_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
        if r < rounds - 1:
            with torch.no_grad():
                _resample(x, w_dec, w_enc, b_enc, b_dec, k, g)


def _resample(x, w_dec, w_enc, b_enc, b_dec, k, g) -> None:
    """Move dead latents and near-duplicates onto the residuals of the worst-reconstructed tokens."""
    sample = x[torch.randint(0, x.shape[0], (min(x.shape[0], 8192),), generator=g)]
    pre = torch.relu((sample - b_dec) @ w_enc.T + b_enc)
    val, idx = pre.topk(k, dim=1)
    codes = torch.zeros_like(pre).scatter(1, idx, val)
    resid = sample - (codes @ w_dec + b_dec)
    fired = (codes > 0).any(0)
    cos = (w_dec @ w_dec.T).triu(1)
    bad = (~fired) | (cos > 0.9).any(0)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return
    worst = resid.norm(dim=1).topk(n_bad).indices
    new = resid[worst] / resid[worst].norm(dim=1, keepdim=True).clamp_min(1e-8)
    w_dec[bad] = new
    w_enc[bad] = new
    b_enc[bad] = 0.0
