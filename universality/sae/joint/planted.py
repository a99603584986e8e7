"""Planted ground truth for joint dictionaries: M activation sets of different widths built from known sparse features.

Each feature lives in a set of models (all of them, a subset, or one). It fires
independently on each row with probability ``p`` and a magnitude drawn uniformly
from ``[0.5, 1.5]``; in every model it lives in, it writes its own random unit
direction, its magnitude there multiplied by ``exp(jitter * N(0, 1))`` drawn per row
and model (so a shared concept is not exactly as strong in every model, as between
real models). Model m's row is the sum of its features' contributions plus Gaussian
noise of standard deviation ``noise`` per dimension.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from ..._errors import UniversalityError


class PlantedJoint(NamedTuple):
    """Planted activations and their truth."""

    xs: list[torch.Tensor]
    """Activations of each model ``[n, d_m]``."""
    membership: list[tuple[int, ...]]
    """For each feature, the models it lives in (sorted indices)."""
    directions: list[torch.Tensor]
    """For each model, ``[n_features, d_m]`` unit directions (zero rows for features absent from the model)."""
    codes: torch.Tensor
    """``[n, n_features]`` the features' activations."""

    @property
    def shared_fraction(self) -> float:
        """Fraction of features that live in every model."""
        m = len(self.xs)
        return sum(len(s) == m for s in self.membership) / len(self.membership)


def plant(widths: Sequence[int], groups: dict[tuple[int, ...], int], n: int = 30000, p: float = 0.04, noise: float = 0.01,
          jitter: float = 0.2, seed: int = 0) -> PlantedJoint:
    """Draw planted activations: ``groups`` maps a tuple of model indices to how many features live in exactly those models."""
    m = len(widths)
    membership: list[tuple[int, ...]] = []
    for members, count in groups.items():
        ms = tuple(sorted(set(members)))
        if not ms or min(ms) < 0 or max(ms) >= m:
            raise UniversalityError(f"group {members!r} names models outside 0..{m - 1}")
        membership += [ms] * int(count)
    g = torch.Generator().manual_seed(seed)
    nf = len(membership)
    fire = torch.rand(n, nf, generator=g) < p
    codes = fire * (0.5 + torch.rand(n, nf, generator=g))
    directions, xs = [], []
    for j, d in enumerate(widths):
        D = torch.randn(nf, d, generator=g)
        D /= D.norm(dim=1, keepdim=True)
        present = torch.tensor([j in s for s in membership])
        D[~present] = 0
        directions.append(D)
        scale = torch.exp(jitter * torch.randn(n, nf, generator=g)) if jitter else 1.0
        xs.append((codes * scale) @ D + noise * torch.randn(n, d, generator=g))
    return PlantedJoint(xs, membership, directions, codes)


def recovery(jd, truth: PlantedJoint, threshold: float = 0.9) -> dict:
    """How well joint dictionary ``jd`` recovers the planted features (decoder directions in the scaled space).

    Returns ``{"recovered", "classified", "best_cos" [n_features, M] (NaN where a feature is absent), "best_latent",
    "false_exclusive", "true_exclusive", "decoupled"}``:
    a feature is recovered when, in every model it lives in, some latent's decoder direction has cosine > ``threshold``
    with it; its latent is the one with the highest mean cosine over those models, and it is classified correctly when
    that latent's label names exactly its models (``"shared"`` for every model). ``false_exclusive`` lists the
    latents classed exclusive whose decoder matches a feature living in every model (the L1 artefact), ``true_exclusive``
    those matching a feature that is not; ``decoupled`` is the fraction of shared features with such a false-exclusive latent.
    """
    from .dictionary import SHARED

    labels = jd.classify()
    m = len(truth.xs)
    nf = len(truth.membership)
    cos = []
    for j in range(m):
        W = jd.decoder(j).float()
        W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos.append(truth.directions[j] @ W.t())  # [nf, n_latents]
    best = torch.full((nf, m), float("nan"))
    rec, good, latent = [], [], []
    for f, members in enumerate(truth.membership):
        for j in members:
            best[f, j] = cos[j][f].max()
        mean = sum(cos[j][f] for j in members) / len(members)
        i = int(mean.argmax())
        latent.append(i)
        ok = all(bool(best[f, j] > threshold) for j in members)
        rec.append(ok)
        want = SHARED if len(members) == m else tuple(jd.names[j] for j in members)
        good.append(ok and labels[i] == want)
    n_rec = sum(rec)
    # latents classed exclusive (carried by fewer than all models) that represent a feature living in every model
    false_ex, true_ex = [], []
    for i, lb in enumerate(labels):
        if lb == SHARED or isinstance(lb, str):
            continue
        ms = [jd.names.index(n) for n in lb]
        for f, members in enumerate(truth.membership):
            if all(bool(cos[j][f, i] > threshold) for j in ms):
                (false_ex if len(members) == m else true_ex).append(i)
                break
    decoupled = sum(
        any(all(bool(cos[j][f, i] > threshold) for j in [jd.names.index(n) for n in labels[i]]) for i in false_ex)
        for f, members in enumerate(truth.membership) if len(members) == m
    )
    n_shared = sum(len(s) == m for s in truth.membership)
    return {"recovered": n_rec / nf, "classified": sum(good) / max(n_rec, 1), "best_cos": best, "best_latent": latent,
            "false_exclusive": false_ex, "true_exclusive": true_ex, "decoupled": decoupled / max(n_shared, 1)}


__all__ = ["PlantedJoint", "plant", "recovery"]
