"""Representational geometry of paired features: SVCCA, RSA and linear CKA with shuffled-pairing nulls.

Inputs are *paired* rows: ``x [n_pairs, d_a]`` and ``y [n_pairs, d_b]`` where row
``p`` of each is one side of the same matched feature pair (e.g. decoder rows of
features paired by activation correlation, Lan et al.). The null distribution
re-pairs the rows of ``y`` at random; the p-value is the share of shuffles scoring
at least as high as the real pairing (with the +1 correction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from .._errors import UniversalityError
from ._inputs import check_positive_int, to_numpy
from .stats import permutation_p_value


@dataclass(frozen=True)
class GeometryScore:
    """A similarity score of paired representations and its shuffled-pairing null."""

    score: float
    """The score under the real pairing."""
    p_value: float
    """(1 + #{null ≥ score}) / (1 + n_permutations)."""
    null_mean: float
    """Mean of the null scores."""
    null_std: float
    """Standard deviation of the null scores."""
    n_permutations: int
    """Number of shuffles."""
    n_components: tuple[int, int] | None = None
    """SVCCA only: components kept on each side."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = {"score": self.score, "p_value": self.p_value, "null_mean": self.null_mean, "null_std": self.null_std,
             "n_permutations": self.n_permutations}
        if self.n_components is not None:
            d["n_components"] = list(self.n_components)
        return d


def _paired(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = to_numpy(x, "x"), to_numpy(y, "y")
    if xa.shape[0] != ya.shape[0]:
        raise UniversalityError(f"x and y must hold the same number of paired rows, got {xa.shape[0]} and {ya.shape[0]}")
    if xa.shape[0] < 3:
        raise UniversalityError(f"at least 3 paired rows are needed, got {xa.shape[0]}")
    return xa, ya


def _null(stat, n: int, n_permutations: int, seed: int) -> tuple[float, float, float, int]:
    n_permutations = check_positive_int(n_permutations, "n_permutations", 0) if n_permutations else 0
    rng = np.random.default_rng(seed)
    observed = stat(np.arange(n))
    null = np.array([stat(rng.permutation(n)) for _ in range(n_permutations)])
    if n_permutations == 0:
        return observed, float("nan"), float("nan"), float("nan")
    return observed, float(permutation_p_value(null, observed)), float(null.mean()), float(null.std())


def svcca_components(x: Any, variance_kept: float = 0.99) -> int:
    """How many principal components of the column-centred ``x`` [n, d] explain ``variance_kept`` of its variance."""
    xa = to_numpy(x, "x")
    if not 0.0 < variance_kept <= 1.0:
        raise UniversalityError(f"variance_kept must lie in (0, 1], got {variance_kept!r}")
    s = np.linalg.svd(xa - xa.mean(0), compute_uv=False)
    share = np.cumsum(s**2) / max(float((s**2).sum()), 1e-300)
    return int(min(np.searchsorted(share, variance_kept - 1e-12) + 1, s.size))


def _reduce(x: np.ndarray, variance_kept: float) -> tuple[np.ndarray, int]:
    """Orthonormal basis [n, k] of the top centred principal directions of x (the SVCCA 'SV' step)."""
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    keep = svcca_components(x, variance_kept)
    return u[:, :keep], keep


def svcca(x: Any, y: Any, *, variance_kept: float = 0.99, n_permutations: int = 1000, seed: int = 0) -> GeometryScore:
    """SVCCA of paired rows: keep the centred principal components explaining ``variance_kept`` on each side,
    then the mean canonical correlation between the two reduced spaces, with a shuffled-pairing null.

    ``x`` [n_pairs, d_a], ``y`` [n_pairs, d_b]. Centring is over pairs (rows), so a common offset shared by all
    rows (as with unit-norm decoders) does not swallow the variance budget.
    """
    xa, ya = _paired(x, y)
    qx, kx = _reduce(xa, variance_kept)
    qy, ky = _reduce(ya, variance_kept)
    if kx + ky >= xa.shape[0]:
        raise UniversalityError(f"SVCCA keeps {kx} + {ky} components but has only {xa.shape[0]} paired rows; "
                                "give more pairs or lower variance_kept")

    def stat(perm: np.ndarray) -> float:
        return float(np.linalg.svd(qx.T @ qy[perm], compute_uv=False).clip(0.0, 1.0).mean())

    obs, p, mu, sd = _null(stat, xa.shape[0], n_permutations, seed)
    return GeometryScore(obs, p, mu, sd, n_permutations, (kx, ky))


def _rdm(x: np.ndarray) -> np.ndarray:
    """Representational dissimilarity: 1 − cosine between rows, [n, n]."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return 1.0 - u @ u.T


def rsa(x: Any, y: Any, *, n_permutations: int = 1000, seed: int = 0) -> GeometryScore:
    """RSA of paired rows: Spearman correlation between the upper triangles of the two cosine-distance RDMs,
    with a shuffled-pairing null. ``x`` [n_pairs, d_a], ``y`` [n_pairs, d_b]."""
    xa, ya = _paired(x, y)
    n = xa.shape[0]
    iu = np.triu_indices(n, 1)
    rx = rankdata(_rdm(xa)[iu])
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    ranks_y = np.zeros((n, n))
    ranks_y[iu] = rankdata(_rdm(ya)[iu])
    ranks_y = ranks_y + ranks_y.T  # re-pairing permutes the RDM, hence its ranks: rank once

    def stat(perm: np.ndarray) -> float:
        ry = ranks_y[np.ix_(perm, perm)][iu]
        ry = ry - ry.mean()
        return float(rx @ ry / np.linalg.norm(ry))

    obs, p, mu, sd = _null(stat, n, n_permutations, seed)
    return GeometryScore(obs, p, mu, sd, n_permutations)


def linear_cka(x: Any, y: Any, *, n_permutations: int = 1000, seed: int = 0) -> GeometryScore:
    """Linear CKA of paired rows, ||Ycᵀ Xc||²_F / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F) with column-centred X, Y,
    with a shuffled-pairing null. ``x`` [n_pairs, d_a], ``y`` [n_pairs, d_b]."""
    xa, ya = _paired(x, y)
    xc, yc = xa - xa.mean(0), ya - ya.mean(0)
    denom = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    if denom == 0:
        raise UniversalityError("linear CKA is undefined when x or y has no variance across rows")

    def stat(perm: np.ndarray) -> float:
        return float(np.linalg.norm(yc[perm].T @ xc) ** 2 / denom)

    obs, p, mu, sd = _null(stat, xa.shape[0], n_permutations, seed)
    return GeometryScore(obs, p, mu, sd, n_permutations)
