"""Sparse probing (SAEBench's protocol, on CPU): can k latents tell a labelled token class apart, next to the model's own activations?

For each class of a labelled token set (one-vs-rest, classes balanced by
subsampling), windows are split into train and test by index (every fifth
window is test). Features are ranked on the training split by the absolute
difference of class means; a logistic-regression probe (L2-regularised,
standardised features, fitted with L-BFGS in float64; a logistic loss is convex, so the fit is the optimum) is trained on the top
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


def _lbfgs(fun, x0: torch.Tensor, max_iter: int, memory: int = 10, tol: float = 1e-7) -> torch.Tensor:
    """Minimise ``fun(x) -> (loss, grad)`` from ``x0`` by L-BFGS (two-loop recursion, backtracking Armijo line search)."""
    x = x0.clone()
    f, g = fun(x)
    ss: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for _ in range(max_iter):
        if float(g.abs().max()) < tol:
            break
        q = g.clone()
        alphas = []
        for s_, y_ in zip(reversed(ss), reversed(ys)):
            a = float(s_ @ q) / float(y_ @ s_)
            alphas.append(a)
            q -= a * y_
        if ss:
            q *= float(ss[-1] @ ys[-1]) / float(ys[-1] @ ys[-1])
        for (s_, y_), a in zip(zip(ss, ys), reversed(alphas)):
            q += (a - float(y_ @ q) / float(y_ @ s_)) * s_
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from the gradient
            ss.clear(), ys.clear()
            d, slope = -g, -float(g @ g)
        step = 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s_, y_ = x_new - x, g_new - g
        if float(y_ @ s_) > 1e-12:
            ss.append(s_)
            ys.append(y_)
            if len(ss) > memory:
                ss.pop(0), ys.pop(0)
        converged = abs(f - f_new) <= tol * max(1.0, abs(f))
        x, f, g = x_new, f_new, g_new
        if converged:
            break
    return x


def probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                   l2: float = 1e-3, max_iter: int = 100) -> float:
    """Test accuracy of a logistic-regression probe fitted on ``x_train`` [n, f] (bool labels ``y_train`` [n]).

    Features are standardised on the training split; the mean logistic loss plus
    ``l2 * ||w||^2`` is minimised by L-BFGS in float64 on one thread (these
    problems are small; threads only add synchronisation). Deterministic.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = x_train.double(), x_test.double()
        mu, sd = a.mean(0), (a.std(0) if a.shape[0] > 1 else torch.ones(a.shape[1], dtype=torch.float64)).clamp_min(1e-8)
        a, b = (a - mu) / sd, (b - mu) / sd
        p = fit_logistic(a, y_train, l2, max_iter)
        return float(((b @ p[:-1] + p[-1] > 0) == y_test).double().mean())
    finally:
        torch.set_num_threads(threads)


def logistic_loss(a: torch.Tensor, y: torch.Tensor, p: torch.Tensor, l2: float) -> tuple[float, torch.Tensor]:
    """Mean logistic loss + ``l2 * ||w||^2`` of weights ``p = [w, c]`` on features ``a`` [n, f], labels ``y`` [n]; and its gradient."""
    n = a.shape[0]
    w, c = p[:-1], p[-1]
    z = a @ w + c
    r = (torch.sigmoid(z) - y) / n
    loss = float(torch.nn.functional.softplus(z).sum() - (y * z).sum()) / n + l2 * float(w @ w)
    return loss, torch.cat([a.T @ r + 2 * l2 * w, r.sum().reshape(1)])


def fit_logistic(a: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, max_iter: int = 100) -> torch.Tensor:
    """``[w, c]`` (float64 [f + 1]) minimising :func:`logistic_loss` on features ``a`` [n, f] and bool labels ``y`` [n]."""
    a, yd = a.double(), y.double()
    return _lbfgs(lambda p: logistic_loss(a, yd, p, l2), torch.zeros(a.shape[1] + 1, dtype=torch.float64), max_iter)


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
