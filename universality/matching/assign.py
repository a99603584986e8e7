"""One-to-one and transport assignments between two feature sets.

``assign(similarity, method=...)`` maximises total similarity:

- ``"hungarian"``: exact, :func:`scipy.optimize.linear_sum_assignment` on the dense matrix.
- ``"sparse-hungarian"``: exact on a top-k candidate graph (rows' and columns' k best partners, found by an
  exact, float32/bfloat16 product, projected or inverted-file search with exact edge values — see
  :mod:`.candidates`; bfloat16 only where :func:`universality.precision.bf16_pays`),
  solved by a sparse shortest-augmenting-path solver (:mod:`._lap`; scipy's
  :func:`~scipy.sparse.csgraph.min_weight_full_bipartite_matching` without numba); when that graph has no full
  matching, the identity pairs are added as extra edges (with their true similarity), which always makes one exist.
- ``"emd"``, ``"sinkhorn"``, ``"unbalanced"``: optimal transport (POT) with uniform marginals and cost
  ``max(similarity) − similarity``; each row is paired with the column that receives most of its mass.
- ``"gromov"``: Gromov–Wasserstein (POT) between two *row sets* ``(x_a, x_b)`` (e.g. decoder rows of two hosts
  with no shared tokens), comparing their internal cosine geometries.

Rectangular inputs are supported by all methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .._errors import UniversalityError
from ._inputs import check_positive_int, to_numpy, unit_rows
from ._lap import min_cost_full_matching
from .candidates import SearchReport, candidate_graph
from .similarity import Factored, as_similarity, unique_edges

METHODS = ("hungarian", "sparse-hungarian", "emd", "sinkhorn", "unbalanced", "gromov")


@dataclass(frozen=True)
class Assignment:
    """Matched pairs (rows[m], cols[m]) and their similarity; OT methods also carry the plan."""

    rows: torch.Tensor
    """[m] int64 row indices (features of A), increasing."""
    cols: torch.Tensor
    """[m] int64 column indices (features of B) matched to ``rows``."""
    scores: torch.Tensor
    """[m] float64 similarity of each pair (for ``"gromov"``: share of the row's mass sent to its column)."""
    method: str
    """The method that produced it."""
    plan: torch.Tensor | None = None
    """[n_a, n_b] float64 transport plan for OT methods, else None."""
    fallback: bool = False
    """``"sparse-hungarian"`` only: True when identity edges had to be added to the candidate graph."""
    search: SearchReport | None = None
    """``"sparse-hungarian"`` only: which candidate search built the graph and its sampled recall."""

    @property
    def total(self) -> float:
        """Sum of matched similarities."""
        return float(self.scores.sum())

    def partner_of_rows(self, n_rows: int) -> torch.Tensor:
        """[n_rows] int64: each row's matched column, −1 where unmatched."""
        out = torch.full((n_rows,), -1, dtype=torch.long)
        out[self.rows] = self.cols
        return out


def assign(similarity: Any, method: str = "hungarian", *, k: int = 32, reg: float = 0.05, reg_m: float = 1.0,
           block_rows: int | None = None, max_iter: int = 1000, search: str = "auto") -> Assignment:
    """Pair features of A (rows) with features of B (columns) so that total similarity is maximal.

    ``similarity``: [n_a, n_b] tensor/array, or a :class:`~universality.matching.similarity.Factored`
    (``"sparse-hungarian"`` never materialises it), or for ``"gromov"`` a pair ``(x_a [n_a, d_a], x_b [n_b, d_b])``.
    ``k``: candidates per row/column for ``"sparse-hungarian"``, ``search`` how they are found (``"auto"``,
    ``"exact"``, ``"fp32"``, ``"bf16"``, ``"projected"``, ``"projected-fp32"``, ``"projected-bf16"``, ``"ivf"``;
    see :func:`~universality.matching.candidates.candidate_graph`; ``Assignment.search`` reports what ran);
    ``reg``: entropic regularisation (``"sinkhorn"``, ``"unbalanced"``), relative to the cost's scale; ``reg_m``: marginal relaxation
    (``"unbalanced"``). Returns an :class:`Assignment` (rows, cols, scores, plan for OT).
    """
    if method not in METHODS:
        raise UniversalityError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "gromov":
        return _gromov(similarity, max_iter)
    if method == "sparse-hungarian":
        return _sparse_hungarian(as_similarity(similarity), check_positive_int(k, "k"), block_rows, search)
    sim = as_similarity(similarity)
    if isinstance(sim, Factored):
        sim = sim.dense().double().numpy()
    if method == "hungarian":
        rows, cols = linear_sum_assignment(sim, maximize=True)
        return _result(rows, cols, sim[rows, cols], method)
    return _transport(sim, method, reg, reg_m, max_iter)


def _result(rows, cols, scores, method, plan=None, fallback=False, search=None) -> Assignment:
    order = np.argsort(rows, kind="stable")
    t = lambda x, dt: torch.as_tensor(np.asarray(x)[order], dtype=dt)  # noqa: E731
    return Assignment(t(rows, torch.long), t(cols, torch.long), t(scores, torch.float64), method,
                      None if plan is None else torch.as_tensor(plan, dtype=torch.float64), fallback, search)


def _sparse_hungarian(sim, k: int, block_rows: int, search: str) -> Assignment:
    n_a, n_b = sim.shape
    cand, report = candidate_graph(sim, k, search, block_rows=block_rows)
    rows, cols, vals = cand.rows, cand.cols, cand.values
    fallback = False
    try:
        r, c = min_cost_full_matching(rows, cols, -vals, n_a, n_b)
    except ValueError:  # the candidate graph has no full matching: add the identity pairs, which complete one
        fallback = True
        diag = np.arange(min(n_a, n_b))
        diag = diag[~cand.locate(diag, diag, n_b)[1]]  # identity pairs not yet in the graph
        dvals = sim.pairs(diag, diag) if isinstance(sim, Factored) else sim[diag, diag]
        cand = unique_edges(np.concatenate([rows, diag]), np.concatenate([cols, diag]), np.concatenate([vals, dvals]), n_b)
        r, c = min_cost_full_matching(cand.rows, cand.cols, -cand.values, n_a, n_b)
    scores = cand.values[cand.locate(r, c, n_b)[0]]  # every matched pair is an edge
    return _result(r, c, scores, "sparse-hungarian", fallback=fallback, search=report)


def _transport(sim: np.ndarray, method: str, reg: float, reg_m: float, max_iter: int) -> Assignment:
    import ot

    if not reg > 0 and method != "emd":
        raise UniversalityError(f"reg must be a positive number for method {method!r}, got {reg!r}")
    if method == "unbalanced" and not reg_m > 0:
        raise UniversalityError(f"reg_m must be a positive number, got {reg_m!r}")
    n_a, n_b = sim.shape
    a, b = np.full(n_a, 1.0 / n_a), np.full(n_b, 1.0 / n_b)
    cost = sim.max() - sim
    if method == "emd":
        plan = ot.emd(a, b, cost)
    elif method == "sinkhorn":
        plan = ot.sinkhorn(a, b, cost, reg, numItermax=max_iter)
    else:
        plan = ot.unbalanced.sinkhorn_unbalanced(a, b, cost, reg, reg_m, numItermax=max_iter)
    rows, cols = _plan_pairs(plan)
    return _result(rows, cols, sim[rows, cols], method, plan=plan)


def _plan_pairs(plan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row with non-negligible mass paired with the column receiving most of it."""
    mass = plan.sum(1)
    rows = np.flatnonzero(mass > 1e-9 * max(mass.max(), 1e-300))
    return rows, plan[rows].argmax(1)


def _gromov(pair: Any, max_iter: int) -> Assignment:
    import ot

    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise UniversalityError("method 'gromov' needs a pair (x_a, x_b) of row sets [n_a, d_a] and [n_b, d_b], not a similarity matrix")
    xa = unit_rows(to_numpy(pair[0], "x_a"))
    xb = unit_rows(to_numpy(pair[1], "x_b"))
    if xa.shape[0] < 2 or xb.shape[0] < 2:
        raise UniversalityError("method 'gromov' needs at least two rows on each side")
    ca, cb = 1.0 - xa @ xa.T, 1.0 - xb @ xb.T
    a, b = np.full(xa.shape[0], 1.0 / xa.shape[0]), np.full(xb.shape[0], 1.0 / xb.shape[0])
    plan = ot.gromov.gromov_wasserstein(ca, cb, a, b, loss_fun="square_loss", max_iter=max_iter)
    rows, cols = _plan_pairs(plan)
    share = plan[rows, cols] / plan[rows].sum(1)
    return _result(rows, cols, share, "gromov", plan=plan)
