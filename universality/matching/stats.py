"""Bootstrap confidence intervals over tokens, and baseline / skyline comparisons (data in, data out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .._errors import UniversalityError
from .._progress import progress
from ._inputs import check_positive_int
from .mppc import MPPCResult, _rows, mppc


def summary_values(result: MPPCResult, *, min_freq: float = 0.0, thresholds: tuple[float, ...] = (0.5, 0.7, 0.9)) -> dict[str, float]:
    """Flat dict of every MPPC summary: ``"a_to_b.mean"``, ``"a_to_b.median"``, ``"a_to_b.frac>0.7"``, same for b_to_a."""
    out = {}
    for d in ("a_to_b", "b_to_a"):
        s = result.summary(d, min_freq=min_freq, thresholds=thresholds)
        out[f"{d}.mean"] = s.mean
        out[f"{d}.median"] = s.median
        for t, v in s.frac_above.items():
            out[f"{d}.frac>{t:g}"] = v
    return out


HIST_EDGES = tuple(round(-0.2 + 0.05 * i, 2) for i in range(25))
"""Histogram bin edges used for MPPC distributions: -0.2 .. 1.0 in steps of 0.05."""


def summarize_values(values: Sequence[float] | np.ndarray, *, n_boot: int = 500, seed: int = 0,
                     thresholds: Sequence[float] = (0.5, 0.7, 0.9), ci: float = 0.95) -> dict:
    """Summarise a 1-D array of per-feature scores (e.g. MPPC max r) for results.json.

    Args:
        values: the per-feature scores, shape ``[n]``; NaN entries (dead features) are dropped.
        n_boot: bootstrap resamples for the confidence interval of the mean (over features).
        seed: seed of the bootstrap.
        thresholds: the fraction of features above each threshold is reported.
        ci: confidence level of the interval.

    Returns:
        ``{"n", "mean", "median", "ci": [lo, hi], "frac_above": {thr: frac}, "hist": {"edges", "counts"}}``.
        Pipelines that have a better interval (bootstrap over tokens) overwrite ``ci``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise UniversalityError("cannot summarise an empty set of scores; every feature was dead or the input was empty")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    boot = v[idx].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    counts, edges = np.histogram(np.clip(v, HIST_EDGES[0], HIST_EDGES[-1]), bins=np.asarray(HIST_EDGES))
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "ci": [float(np.quantile(boot, alpha)), float(np.quantile(boot, 1.0 - alpha))],
        "frac_above": {f"{t:g}": float((v > t).mean()) for t in thresholds},
        "hist": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


INTERVALS = ("bias-bounded", "basic", "percentile")
_MAX_BIAS_FACTOR = 1.0 / (np.sqrt(2.0) - 1.0)  # true bias <= this x the bootstrap's own bias (see bias_bounded_interval)


def permutation_p_value(null: np.ndarray, observed: Any) -> np.ndarray:
    """``(1 + #{null ≥ observed}) / (1 + n_permutations)`` along the first axis of ``null`` [n_permutations, ...]
    against ``observed`` [...] (a scalar gives a 0-d array); null scores within 1e-12 below ``observed`` count as ties."""
    null = np.asarray(null, dtype=float)
    return (1.0 + np.sum(null >= np.asarray(observed, dtype=float) - 1e-12, axis=0)) / (1.0 + len(null))


@dataclass(frozen=True)
class Interval:
    """A point estimate, its bootstrap interval and the bootstrap's estimate of the estimate's bias."""

    estimate: float
    """The statistic on the original tokens."""
    low: float
    """Lower bound."""
    high: float
    """Upper bound."""
    bias: float = 0.0
    """Mean of the replicates minus the estimate: how far resampling pushes the statistic (b*)."""
    method: str = "bias-bounded"
    """Which interval (one of :data:`INTERVALS`)."""


def bias_bounded_interval(estimate: float, replicates: np.ndarray, level: float = 0.95,
                          method: str = "bias-bounded") -> Interval:
    """Interval for the infinite-token value of a statistic from its bootstrap ``replicates`` [n_boot].

    With b* = mean(replicates) − estimate and d = replicates − mean(replicates):

    - ``"percentile"``: the (1 ∓ level)/2 quantiles of the replicates (ignores bias; kept for comparison).
    - ``"basic"``: ``[estimate − b* − q_hi(d), estimate − b* − q_lo(d)]``, i.e. the percentile interval
      reflected about the estimate; removes a bias equal to b*.
    - ``"bias-bounded"`` (default): when b* > 0, ``[estimate − q_hi(d) − (1 + √2) b*, estimate − q_lo(d)]``;
      otherwise the basic interval. For a mean of per-feature maxima of noisy correlations, the bias at
      noise σ, B(σ) = E max_j(r_j + σ z_j) − max_j r_j, is convex in σ with B(0) = 0, and a replicate carries
      noise √2 σ, so 0 ≤ B(σ) ≤ (B(√2σ) − B(σ)) / (√2 − 1) ≈ (1 + √2) b*; the interval covers that whole
      range of bias (√2 + 1 when every partner is a tie, near 0 when each feature has one clear partner).
    """
    if method not in INTERVALS:
        raise UniversalityError(f"interval must be one of {', '.join(INTERVALS)}; got {method!r}")
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0 or not np.isfinite(estimate):
        return Interval(float(estimate), float("nan"), float("nan"), float("nan"), method)
    centre = float(reps.mean())
    bias = centre - estimate
    q_lo, q_hi = np.quantile(reps - centre, [(1 - level) / 2, (1 + level) / 2])
    if method == "percentile":
        return Interval(float(estimate), centre + q_lo, centre + q_hi, bias, method)
    bias_lo, bias_hi = (0.0, _MAX_BIAS_FACTOR * bias) if method == "bias-bounded" and bias > 0 else (bias, bias)
    return Interval(float(estimate), float(estimate - q_hi - bias_hi), float(estimate - q_lo - bias_lo), bias, method)


def bootstrap_mppc(codes_a: Any, codes_b: Any, *, n_boot: int = 100, level: float = 0.95, seed: int = 0,
                   min_freq: float = 0.0, thresholds: tuple[float, ...] = (0.5, 0.7, 0.9),
                   sparse: bool | str = "auto", interval: str = "bias-bounded", point: MPPCResult | None = None) -> dict[str, Interval]:
    """Bootstrap intervals over tokens for every MPPC summary (see :func:`summary_values`).

    Each replicate resamples the ``n_tokens`` rows of ``codes_a`` [n, n_a] / ``codes_b`` [n, n_b] with
    replacement (as integer token weights, so nothing is copied) and recomputes MPPC exactly. MPPC is a
    max over noisy correlations, so it reads high on finite tokens and higher still on resampled ones;
    ``interval`` (see :func:`bias_bounded_interval`) says how that bias is handled. The default,
    ``"bias-bounded"``, widens the interval downward to cover every bias the replicates allow.
    ``point`` is the already computed :func:`mppc` of these codes (not recomputed when given). Under torchrun
    the replicates are shared out among the processes (replicate i on process i mod world, drawn from the
    same seeded sequence), so every process returns the intervals one process would.
    """
    n_boot = check_positive_int(n_boot, "n_boot", 2)
    if not 0.0 < level < 1.0:
        raise UniversalityError(f"level must lie strictly between 0 and 1, got {level!r}")
    if interval not in INTERVALS:
        raise UniversalityError(f"interval must be one of {', '.join(INTERVALS)}; got {interval!r}")
    n = _rows(codes_a)
    if n == 0:
        raise UniversalityError("codes are empty: at least one token is needed for a bootstrap")
    from .. import _dist

    est = summary_values(point if point is not None else mppc(codes_a, codes_b, sparse=sparse), min_freq=min_freq,
                         thresholds=thresholds)
    rng = np.random.default_rng(seed)
    rank, world = _dist.rank(), _dist.world()
    mine = {}
    for i in progress(range(n_boot), desc="bootstrap", unit="rep"):
        w = rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64)  # every process draws every replicate's weights
        if i % world == rank:
            mine[i] = summary_values(mppc(codes_a, codes_b, sparse=sparse, weights=w), min_freq=min_freq, thresholds=thresholds)
    if world > 1:
        for part in _dist.all_gather_objects(mine):
            mine.update(part)
    reps = {k: [mine[i][k] for i in range(n_boot)] for k in est}
    return {k: bias_bounded_interval(v, np.asarray(reps[k]), level, interval) for k, v in est.items()}


@dataclass(frozen=True)
class BaselineComparison:
    """One statistic for the pair under study, its floor and its skylines."""

    statistic: str
    """Which summary was compared, e.g. ``"a_to_b.mean"``."""
    observed: float
    """The pair under study."""
    floor: float | None
    """Baseline (e.g. an SAE on a random-init host), or None."""
    skylines: dict[str, float]
    """Name → value of each skyline (another SAE seed, another model seed, ...)."""
    normalised: dict[str, float]
    """Skyline name → (observed − floor) / (skyline − floor): 0 at the floor, 1 at the skyline."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"statistic": self.statistic, "observed": self.observed, "floor": self.floor,
                "skylines": dict(self.skylines), "normalised": dict(self.normalised)}


def _stat(value: Any, statistic: str) -> float:
    if isinstance(value, MPPCResult):
        value = summary_values(value)
    if isinstance(value, Mapping):
        if statistic not in value:
            raise UniversalityError(f"statistic {statistic!r} is not among the given summaries ({', '.join(map(str, value))})")
        return float(value[statistic])
    return float(value)


def compare_baselines(observed: Any, *, floor: Any = None, skylines: Mapping[str, Any] | None = None,
                      statistic: str = "a_to_b.mean") -> BaselineComparison:
    """Place an observed MPPC statistic between a floor and skylines.

    Each argument is an :class:`MPPCResult`, a dict from :func:`summary_values`, or a number.
    """
    obs = _stat(observed, statistic)
    fl = None if floor is None else _stat(floor, statistic)
    sky = {str(k): _stat(v, statistic) for k, v in (skylines or {}).items()}
    norm = {}
    for k, v in sky.items():
        base = fl if fl is not None else 0.0
        norm[k] = (obs - base) / (v - base) if v != base else float("nan")
    return BaselineComparison(statistic, obs, fl, sky, norm)
