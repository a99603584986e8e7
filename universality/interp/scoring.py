"""Detection and fuzzing scores of an explanation on held-out windows, as delphi defines them.

* **Detection**: each held-out window (activating, or a random / neighbour non-activating one) is shown whole;
  the judge says whether the latent fires anywhere in it.
* **Fuzzing**: held-out activating windows have their activating tokens (activation ≥ 0.3 × the window's
  maximum) highlighted; non-activating windows have as many random tokens highlighted as an activating window
  has on average (seeded); the judge says whether the highlighted tokens are the ones the latent fires on.

A judge returns, per sample, a probability (or ``None`` when it failed); the prediction is ``probability ≥ 0.5``.
:func:`classification_metrics` gives accuracy, balanced accuracy, AUC, precision, recall and F1; every sample is
kept in delphi's record form (:func:`sample_records`) so its tools read our scores.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .contexts import Examples, LatentContexts
from .tokens import TokenTable
from .tokenstats import Simulator

SCORERS = ("detection", "fuzz")
"""Scorer names, as delphi names its score folders."""
HIGHLIGHT_THRESHOLD = 0.3
"""Fraction of a window's maximum activation at which a token counts as activating (highlighted)."""


class Samples(NamedTuple):
    """What a judge sees for one latent under one scorer. Arrays are ``[m, window]`` or ``[m]``."""

    ids: np.ndarray
    acts: np.ndarray
    distance: np.ndarray
    activating: np.ndarray
    """Ground truth: the latent fires in the window (detection) / the highlighting is correct (fuzzing)."""
    highlight: np.ndarray | None
    """Highlighted tokens (fuzzing), bool ``[m, window]``; ``None`` for detection."""


def _stack(pos: Examples, neg: Examples) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = np.concatenate([pos.ids, neg.ids])
    acts = np.concatenate([pos.acts, neg.acts])
    dist = np.concatenate([pos.distance, neg.distance])
    lab = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    return ids, acts, dist, lab


def detection_samples(ctx: LatentContexts) -> Samples:
    """Held-out activating windows and the random + neighbour non-activating ones."""
    ids, acts, dist, lab = _stack(ctx.test, ctx.negatives)
    return Samples(ids, acts, dist, lab, None)


def fuzz_samples(ctx: LatentContexts, seed: int = 0) -> Samples:
    """Held-out activating windows highlighted where they fire, non-activating ones highlighted at random tokens."""
    pos, neg = ctx.test, ctx.negatives
    ids, acts, dist, lab = _stack(pos, neg)
    hi = np.zeros(ids.shape, dtype=bool)
    if len(pos):
        mx = pos.acts.max(axis=1, keepdims=True)
        hi[: len(pos)] = (pos.acts >= HIGHLIGHT_THRESHOLD * mx) & (pos.acts > 0)
        n_wrong = max(1, math.ceil(float((pos.acts > 0).sum(axis=1).mean())))
    else:
        n_wrong = 1
    rng = np.random.default_rng([seed, ctx.latent, 7])
    for r in range(len(pos), ids.shape[0]):
        hi[r, rng.choice(ids.shape[1], size=min(n_wrong, ids.shape[1]), replace=False)] = True
    return Samples(ids, acts, dist, lab, hi)


def make_samples(scorer: str, ctx: LatentContexts, seed: int = 0) -> Samples:
    """The samples of ``scorer`` (``"detection"`` or ``"fuzz"``) for one latent."""
    return detection_samples(ctx) if scorer == "detection" else fuzz_samples(ctx, seed)


def offline_judge(sim: Simulator) -> Callable[[str, str, Samples], list[float | None]]:
    """A judge that reads the explanation through the token-statistics :class:`~.tokenstats.Simulator`.

    Detection: probability = the largest simulated activation in the window. Fuzzing: the mean simulated
    activation over the highlighted tokens.
    """

    def judge(scorer: str, explanation: str, s: Samples) -> list[float | None]:
        pred = sim.simulate(explanation, s.ids)
        if scorer == "detection":
            p = pred.max(axis=1) if pred.shape[1] else np.zeros(pred.shape[0])
        else:
            hl = s.highlight
            cnt = np.maximum(hl.sum(axis=1), 1)
            p = (pred * hl).sum(axis=1) / cnt
        return [float(x) for x in p]

    return judge


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann–Whitney, ties counted half); ``None`` without both classes."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(activating: Sequence[bool], probability: Sequence[float | None]) -> dict:
    """Metrics of a judge's answers: accuracy, balanced_accuracy, auc, precision, recall, f1, n, n_failed.

    Failed answers (``None``) are left out of every metric and counted in ``n_failed``.
    """
    lab_all = np.asarray(activating, dtype=bool)
    ok = np.array([p is not None for p in probability], dtype=bool)
    lab = lab_all[ok]
    prob = np.array([p for p in probability if p is not None], dtype=np.float64)
    pred = prob >= 0.5
    tp, tn = int((pred & lab).sum()), int((~pred & ~lab).sum())
    fp, fn = int((pred & ~lab).sum()), int((~pred & lab).sum())
    pos, neg = tp + fn, tn + fp
    n = pos + neg
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / pos if pos else 0.0
    return {"accuracy": (tp + tn) / n if n else None,
            "balanced_accuracy": ((tp / pos if pos else 0.0) + (tn / neg if neg else 0.0)) / 2 if n else None,
            "auc": _auc(lab, prob) if n else None, "precision": prec, "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "n": n, "n_failed": int((~ok).sum())}


def sample_records(s: Samples, probability: Sequence[float | None], table: TokenTable) -> list[dict]:
    """delphi's per-sample score records: str_tokens, activations, distance, activating, prediction, probability, correct."""
    out = []
    for r in range(s.ids.shape[0]):
        p = probability[r]
        pred = None if p is None else bool(p >= 0.5)
        out.append({"str_tokens": table.text(s.ids[r]), "activations": [float(a) for a in s.acts[r]],
                    "distance": int(s.distance[r]), "activating": bool(s.activating[r]), "prediction": pred,
                    "probability": None if p is None else float(p),
                    "correct": None if pred is None else bool(pred == bool(s.activating[r]))})
    return out


def score_latent(judge: Callable[[str, str, Samples], list], explanation: str, ctx: LatentContexts,
                 scorers: Sequence[str] = SCORERS, seed: int = 0) -> dict[str, tuple[Samples, list]]:
    """Each scorer's samples and the judge's probabilities for one latent's explanation."""
    out: dict[str, Any] = {}
    for sc in scorers:
        s = make_samples(sc, ctx, seed)
        out[sc] = (s, judge(sc, explanation, s))
    return out


class OfflineJudge:
    """:func:`offline_judge` with the batch interface of :class:`~.llm.LLMJudge`."""

    def __init__(self, sim: Simulator):
        self._judge = offline_judge(sim)

    def judge_many(self, items: Sequence[tuple[str, str, Samples]]) -> list[list[float | None]]:
        """Probabilities per sample of each ``(scorer, explanation, samples)``."""
        return [self._judge(sc, expl, s) for sc, expl, s in items]
