"""Planted dictionary: data built from known random unit atoms with sparse codes plus noise.

The data generator and the dictionaries' initialisation use different seeds, so
a dictionary cannot start on the true atoms. A true atom counts as recovered
when some decoder row has cosine > 0.9 with it.
"""

from __future__ import annotations

import torch

from universality import sae

DATA_SEED = 12345
INIT_SEED = 0


def planted(n=20000, d=32, m=64, s=3, noise=0.05, seed=DATA_SEED):
    """x [n, d] = sparse codes (s active per row, magnitudes in [0.5, 2]) @ atoms [m, d] + Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(m, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.rand(n, m, generator=g).argsort(dim=1)[:, :s]
    mags = torch.rand(n, s, generator=g) * 1.5 + 0.5
    codes = torch.zeros(n, m).scatter_(1, idx, mags)
    return codes @ atoms + noise * torch.randn(n, d, generator=g), atoms


def recovered_fraction(atoms: torch.Tensor, W_dec: torch.Tensor, threshold: float = 0.9) -> float:
    w = W_dec.detach() / W_dec.detach().norm(dim=1, keepdim=True)
    best = (atoms @ w.T).max(dim=1).values
    return float((best > threshold).float().mean())


def test_topk_recovers_planted_atoms():
    x, atoms = planted()
    coder = sae.fit(x, kind="topk", n_latents=128, k=3, seed=INIT_SEED, batch_size=512, n_tokens=512 * 400, device="cpu")
    rec = recovered_fraction(atoms, coder.W_dec)
    m = coder.metrics
    print(f"\nplanted TopK: recovered {rec:.2f} of {atoms.shape[0]} atoms (cos > 0.9), FVU {m.fvu:.3f}, L0 {m.l0:.2f}, dead {m.dead_fraction:.2f}")
    assert rec >= 0.9
    assert m.fvu < 0.15
    # a dictionary that starts at random (before training) recovers nothing: the test can fail
    untrained = sae.build_coder(sae.CoderConfig(kind="topk", d_in=32, n_latents=128, k=3, seed=INIT_SEED))
    assert recovered_fraction(atoms, untrained.W_dec) < 0.05


def test_relu_l1_with_defaults_recovers_a_good_share():
    x, atoms = planted()
    coder = sae.fit(x, kind="relu", n_latents=128, seed=INIT_SEED, batch_size=512, n_tokens=512 * 1000, device="cpu")
    rec = recovered_fraction(atoms, coder.W_dec)
    m = coder.metrics
    print(f"\nplanted ReLU-L1 (default l1_coefficient {coder.cfg.l1_coefficient}): recovered {rec:.2f}, FVU {m.fvu:.3f}, L0 {m.l0:.2f}")
    assert rec >= 0.6
    assert m.l0 < 16  # a sparse code (3 true atoms per row; 128 latents), not a dense one
    assert m.fvu < 0.4
