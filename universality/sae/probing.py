"""Sparse probing (SAEBench's protocol, on CPU): can k latents tell a labelled token class apart, next to the model's own activations?

For each class of a labelled token set (one-vs-rest, classes balanced by
subsampling), windows are split into train and test by index (every fifth
window is test). Features are ranked on the training split by the absolute
difference of class means; a logistic-regression probe (L2-regularised,
standardised features, fitted with L-BFGS in float64) is trained on the top
``k`` and on all features, for the dictionary's codes and for the raw
activations (the baseline). Accuracy is measured on the test split.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._errors import UniversalityError

PROBE_KS = (1, 2, 5, 10, 20, 50)
"""The k of SAEBench's top-k probes that are kept when the dictionary is wide enough."""


class ProbeResult(NamedTuple):
    """Probe accuracies for one task (one class against the rest)."""

    task: str
    """Class name."""
    n_train: int
    """Balanced training tokens."""
    n_test: int
    """Balanced test tokens."""
    llm_test_accuracy: float
    """Probe on every dimension of the model's activation."""
    llm_top_k: dict
    """k → accuracy of a probe on the k activation dimensions with the largest class-mean difference."""
    sae_test_accuracy: float
    """Probe on every latent of the dictionary."""
    sae_top_k: dict
    """k → accuracy of a probe on the k latents with the largest class-mean difference."""

    def to_dict(self) -> dict:
        """JSON-ready dict (k keys as strings)."""
        d = self._asdict()
        d["llm_top_k"] = {str(k): v for k, v in self.llm_top_k.items()}
        d["sae_top_k"] = {str(k): v for k, v in self.sae_top_k.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeResult":
        """Inverse of :meth:`to_dict`."""
        return cls(d["task"], int(d["n_train"]), int(d["n_test"]), float(d["llm_test_accuracy"]),
                   {int(k): float(v) for k, v in d["llm_top_k"].items()}, float(d["sae_test_accuracy"]),
                   {int(k): float(v) for k, v in d["sae_top_k"].items()})


def probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                   l2: float = 1e-3, max_iter: int = 100) -> float:
    """Test accuracy of a logistic-regression probe fitted on ``x_train`` [n, f] (bool labels ``y_train`` [n]).

    Features are standardised on the training split; the mean logistic loss plus
    ``l2 * ||w||^2`` is minimised by scipy's L-BFGS-B in float64 (deterministic).
    """
    import numpy as np
    from scipy.optimize import minimize

    a = x_train.double().numpy()
    b = x_test.double().numpy()
    mu, sd = a.mean(0), np.maximum(a.std(0, ddof=1) if a.shape[0] > 1 else np.ones(a.shape[1]), 1e-8)
    a, b = (a - mu) / sd, (b - mu) / sd
    y = y_train.numpy().astype(np.float64)
    n = a.shape[0]

    def loss_grad(p: np.ndarray) -> tuple[float, np.ndarray]:
        w, c = p[:-1], p[-1]
        z = a @ w + c
        loss = np.logaddexp(0.0, z).sum() - (y * z).sum()
        r = (1.0 / (1.0 + np.exp(-z)) - y) / n
        return loss / n + l2 * float(w @ w), np.concatenate([a.T @ r + 2 * l2 * w, [r.sum()]])

    fit = minimize(loss_grad, np.zeros(a.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    w, c = fit.x[:-1], fit.x[-1]
    return float(((b @ w + c > 0) == y_test.numpy()).mean())


def top_features(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` features of ``x`` [n, f] with the largest |mean(class 1) - mean(class 0)|."""
    diff = (x[y].double().mean(0) - x[~y].double().mean(0)).abs()
    return diff.topk(min(k, x.shape[1])).indices


def _balanced(mask_pos: torch.Tensor, mask_neg: torch.Tensor, gen: torch.Generator, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    pos, neg = mask_pos.nonzero().squeeze(1), mask_neg.nonzero().squeeze(1)
    n = min(pos.numel(), neg.numel(), cap)
    pos, neg = pos[torch.randperm(pos.numel(), generator=gen)[:n]], neg[torch.randperm(neg.numel(), generator=gen)[:n]]
    idx = torch.cat([pos, neg])
    return idx, torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])


def sparse_probing(acts: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor, window: torch.Tensor, classes: tuple[str, ...],
                   ks: tuple[int, ...] = PROBE_KS, max_per_class: int = 2000, seed: int = 0, min_per_class: int = 10) -> list[ProbeResult]:
    """One :class:`ProbeResult` per class with enough tokens on both sides.

    ``acts`` [n, d] and ``codes`` [n, n_latents] are per-token rows, ``labels`` [n]
    class indices (-1 unlabelled), ``window`` [n] the index of each token's
    window (every fifth window is test).
    """
    if not (acts.shape[0] == codes.shape[0] == labels.shape[0] == window.shape[0]):
        raise UniversalityError(f"probing inputs disagree in length: {acts.shape[0]}, {codes.shape[0]}, {labels.shape[0]}, {window.shape[0]} rows")
    gen = torch.Generator().manual_seed(seed)
    test = window % 5 == 0
    out = []
    for ci, name in enumerate(classes):
        labelled = labels >= 0
        tr_idx, tr_y = _balanced(labelled & ~test & (labels == ci), labelled & ~test & (labels != ci), gen, max_per_class)
        te_idx, te_y = _balanced(labelled & test & (labels == ci), labelled & test & (labels != ci), gen, max_per_class)
        if tr_y.sum() < min_per_class or te_y.sum() < min_per_class:
            continue
        res = {}
        for side, x in (("llm", acts), ("sae", codes)):
            xtr, xte = x[tr_idx], x[te_idx]
            res[side] = probe_accuracy(xtr, tr_y, xte, te_y)
            res[side + "_k"] = {k: probe_accuracy(xtr[:, f], tr_y, xte[:, f], te_y)
                                for k in ks if k <= x.shape[1] for f in [top_features(xtr, tr_y, k)]}
        out.append(ProbeResult(name, int(tr_y.numel()), int(te_y.numel()), res["llm"], res["llm_k"], res["sae"], res["sae_k"]))
    return out


__all__ = ["PROBE_KS", "ProbeResult", "probe_accuracy", "top_features", "sparse_probing"]
