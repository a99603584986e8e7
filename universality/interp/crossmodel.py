"""Explanations across models: explanation swap, embedding agreement and its relation to MPPC.

* **Explanation swap** (:func:`explanation_swap`): for a pair (latent ``i`` of A, its MPPC partner ``j`` in B),
  detection on B's held-out windows of ``j`` judged with A's explanation of ``i`` ("swap"), with B's own
  explanation of ``j`` ("own"), and with the explanation of a random other latent of A ("random control").
  When ``i`` and ``j`` are the same feature, swap ≈ own; for unrelated latents swap falls to chance.
* **Embedding agreement** (:func:`embedding_agreement`): the cosine of the two explanations' sentence embeddings
  per pair; a Hungarian assignment on explanation-embedding similarity compared with the MPPC pairing; the
  Spearman correlation between MPPC and embedding cosine over pairs, with a bootstrap interval over pairs.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .contexts import ContextSet
from .scoring import classification_metrics, detection_samples


def explanation_swap(judge: Any, expl_a: Mapping[int, str], expl_b: Mapping[int, str], ctx_b: ContextSet,
                     pairs: Sequence[tuple[int, int]], seed: int = 0, metric: str = "balanced_accuracy") -> dict:
    """Detection ``metric`` per pair ``(i, j)`` with A's explanation (swap), B's own and a random A latent's.

    Pairs whose latents lack an explanation or contexts are left out. Returns ``{"pairs": [[i, j], ...],
    "own": [...], "swap": [...], "random": [...], "mean_own", "mean_swap", "mean_random"}``.
    """
    rng = np.random.default_rng(seed)
    keys_a = sorted(expl_a)
    use = [(i, j) for i, j in pairs if i in expl_a and j in expl_b and j in ctx_b.latents]
    items, kept = [], []
    for i, j in use:
        others = [k for k in keys_a if k != i]
        if not others:
            continue
        r = others[int(rng.integers(len(others)))]
        s = detection_samples(ctx_b.latents[j])
        items += [("detection", expl_b[j], s), ("detection", expl_a[i], s), ("detection", expl_a[r], s)]
        kept.append((i, j))
    probs = judge.judge_many(items) if items else []
    own, swap, rand = [], [], []
    for k in range(len(kept)):
        vals = [classification_metrics(items[3 * k + t][2].activating, probs[3 * k + t])[metric] for t in range(3)]
        own.append(vals[0]), swap.append(vals[1]), rand.append(vals[2])

    def mean(v):
        v = [x for x in v if x is not None]
        return float(np.mean(v)) if v else None

    return {"pairs": [list(p) for p in kept], "own": own, "swap": swap, "random": rand, "metric": metric,
            "mean_own": mean(own), "mean_swap": mean(swap), "mean_random": mean(rand)}


def spearman_bootstrap(x: Sequence[float], y: Sequence[float], n_boot: int = 200, seed: int = 0,
                       level: float = 0.95) -> dict:
    """Spearman's rho of ``x`` and ``y`` and a percentile bootstrap interval over pairs: ``{rho, low, high, n}``."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "low": None, "high": None, "n": n}
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if np.ptp(x[idx]) and np.ptp(y[idx]):
            boots.append(float(spearmanr(x[idx], y[idx]).statistic))
    a = (1 - level) / 2
    low, high = (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))) if boots else (None, None)
    return {"rho": rho, "low": low, "high": high, "n": n}


def embedding_agreement(emb_a: np.ndarray, emb_b: np.ndarray, latents_a: Sequence[int], latents_b: Sequence[int],
                        mppc_argmax: Mapping[int, int], mppc_r: Mapping[int, float], n_boot: int = 200, seed: int = 0) -> dict:
    """Explanation-embedding agreement of two dictionaries against their MPPC pairing.

    Args:
        emb_a, emb_b: unit-norm embeddings ``[len(latents_a), D]`` / ``[len(latents_b), D]`` of the explanations of
            ``latents_a`` / ``latents_b``.
        mppc_argmax, mppc_r: A latent → its MPPC partner in B and that correlation.

    Returns:
        ``{"cosine": [...], "pairs": [[i, j], ...], "mean_cosine", "mean_cosine_random", "hungarian_agreement",
        "spearman": {rho, low, high, n}}``: cosine per MPPC pair (both explained); the mean over random pairs as the
        reference; the fraction of those MPPC pairs the Hungarian assignment on embedding cosine also makes.
    """
    from scipy.optimize import linear_sum_assignment

    pos_a = {int(j): k for k, j in enumerate(latents_a)}
    pos_b = {int(j): k for k, j in enumerate(latents_b)}
    sim = np.asarray(emb_a, dtype=np.float64) @ np.asarray(emb_b, dtype=np.float64).T
    pairs = [(i, int(mppc_argmax[i])) for i in latents_a if i in mppc_argmax and int(mppc_argmax[i]) in pos_b]
    cos = [float(sim[pos_a[i], pos_b[j]]) for i, j in pairs]
    rng = np.random.default_rng(seed)
    rand = sim[rng.integers(0, sim.shape[0], 2000), rng.integers(0, sim.shape[1], 2000)] if sim.size else np.zeros(0)
    agree = None
    if pairs and sim.size:
        rows, cols = linear_sum_assignment(sim, maximize=True)
        hung = {int(latents_a[r]): int(latents_b[c]) for r, c in zip(rows, cols)}
        agree = float(np.mean([hung.get(i) == j for i, j in pairs]))
    return {"pairs": [list(p) for p in pairs], "cosine": cos, "mean_cosine": float(np.mean(cos)) if cos else None,
            "mean_cosine_random": float(rand.mean()) if rand.size else None, "hungarian_agreement": agree,
            "spearman": spearman_bootstrap([mppc_r[i] for i, _ in pairs], cos, n_boot=n_boot, seed=seed)}
