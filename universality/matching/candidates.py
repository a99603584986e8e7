"""Candidate graphs for sparse assignment: exact, bfloat16 and inverted-file searches, edges rescored exactly.

A candidate graph holds, for every row and every column of a similarity, a few of its best partners. Three
searches build it from a :class:`~universality.matching.similarity.Factored` similarity ``left @ right.T``:

- ``"exact"``: float32 blocked product, exact top-k per row and per column (:func:`topk_candidates`).
- ``"bf16"``: bfloat16 blocked product (AMX/AVX-512 bf16 where the CPU has it), used only to *pick* each row's
  ``k + k // 8`` best partners; every picked edge is then rescored from the float32 factors. Columns that
  few rows picked get an exact search of their own.
- ``"ivf"``: inverted file. The columns are clustered into cells by spherical k-means; each row searches
  only the columns of its ``n_probe`` nearest cells (float32), keeping its ``k`` best there, and each column
  keeps its ``k`` best among the rows that searched its cell. A small fraction of the full product on
  structured dictionaries, useless on unstructured ones — hence the recall check in ``"auto"``.

``"auto"`` picks ``"exact"`` for small or dense inputs and ``"bf16"`` up to 32K x 32K (measured faster than the
inverted file there). Beyond, the inverted file's n^1.5 cost wins on structured dictionaries, so it tries
``"ivf"``, with two recall checks on random samples of rows and columns whose exact full rows/columns are
computed: before building, the fewest probes (8, 16 or 32) that reach every sampled best partner; after,
on a fresh sample, that every sampled best partner is an edge of the graph. Either fails and it runs ``"bf16"``. Edge values are float64 dot
products of the factors whatever the search, so the matching solved on the graph is exact on its edges.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import numpy as np
import torch

from .._errors import UniversalityError
from .._progress import progress
from ._inputs import check_positive_int
from .similarity import Candidates, Factored, as_similarity, block_rows_for, topk_candidates, unique_edges

SEARCHES = ("auto", "exact", "bf16", "ivf")
_IVF_THREADS = 1  # the per-cell blocks are small: one thread beats waking a pool for each
_SMALL = 1 << 22  # similarities below which "auto" simply searches exactly
_IVF_FROM = 1 << 30  # similarities (32K x 32K) from which "auto" tries the inverted file: below, bf16 was faster here
_PROBES = (8, 16, 32)  # cells each row searches; "auto" takes the fewest that reach every sampled best partner


class SearchReport(NamedTuple):
    """Which candidate search built a graph and what its recall check saw."""

    search: str
    """The search that produced the graph (``"exact"``, ``"bf16"`` or ``"ivf"``)."""
    sampled_recall: float | None
    """Fraction of sampled rows' and columns' exact best partners present in the graph (None: not checked)."""
    n_sampled: int
    """How many rows plus columns were checked."""
    tried: tuple[str, ...]
    """Searches attempted, in order: ``("ivf(8)",)`` (inverted file with 8 probes, accepted), ``("ivf(8)", "bf16")``
    (rejected by the recall check), ``("ivf-plan", "bf16")`` (rejected before it was built)."""


def candidate_graph(similarity: Any, k: int, search: str = "auto", *, block_rows: int | None = None,
                    n_sample: int = 256, seed: int = 0) -> tuple[Candidates, SearchReport]:
    """A candidate graph with about ``k`` best partners per row and per column of ``similarity``.

    ``similarity``: dense [n_a, n_b] or :class:`Factored`; ``search``: one of :data:`SEARCHES` (``"bf16"`` and
    ``"ivf"`` need factors). ``n_sample``: rows and columns whose exact best partner is checked (``"ivf"``
    and ``"auto"``). Returns the graph (edge values float64) and a :class:`SearchReport`.
    """
    if search not in SEARCHES:
        raise UniversalityError(f"search must be one of {', '.join(SEARCHES)}; got {search!r}")
    k = check_positive_int(k, "k")
    sim = as_similarity(similarity)
    factored = isinstance(sim, Factored)
    if search in ("bf16", "ivf") and not factored:
        raise UniversalityError(f"search {search!r} needs a Factored similarity (e.g. cosine_factors(x_a, x_b)), not a dense matrix")
    n_a, n_b = sim.shape
    if search == "exact" or (search == "auto" and (not factored or n_a * n_b <= _SMALL)):
        cand = topk_candidates(sim, k, block_rows=block_rows)
        return cand, SearchReport("exact", None, 0, ("exact",))
    if search == "bf16" or (search == "auto" and n_a * n_b < _IVF_FROM):
        return bf16_candidates(sim, k, block_rows=block_rows), SearchReport("bf16", None, 0, ("bf16",))
    cells = InvertedFiles(sim, seed=seed)
    n_probe = cells.probes_needed(n_sample, seed + 1) if search == "auto" else _PROBES[0]
    if n_probe is None:  # the sampled best partners would not all be reached even with the most probes
        return bf16_candidates(sim, k, block_rows=block_rows), SearchReport("bf16", None, 0, ("ivf-plan", "bf16"))
    cand = cells.candidates(k, n_probe)
    recall, n_checked = sampled_best_recall(sim, cand, n_sample, seed + 2)  # a fresh sample: an unbiased check
    if search == "ivf" or recall == 1.0:
        return cand, SearchReport("ivf", recall, n_checked, (f"ivf({n_probe})",))
    return bf16_candidates(sim, k, block_rows=block_rows), SearchReport("bf16", recall, n_checked, (f"ivf({n_probe})", "bf16"))


@contextlib.contextmanager
def _threads(n: int):
    """Run torch ops with ``n`` threads (the per-cell blocks are small; a thread pool only waits on them)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, old)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def partner_scores(mine: torch.Tensor, theirs: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """[n, K] dot products ``mine[i] · theirs[picks[i, j]]`` in the factors' precision, in row chunks."""
    out = torch.empty(picks.shape, dtype=mine.dtype)
    step = max(1, (1 << 22) // max(1, picks.shape[1] * mine.shape[1]))  # gathered rows held: ~16M numbers
    for s in range(0, picks.shape[0], step):
        out[s:s + step] = torch.bmm(theirs[picks[s:s + step]], mine[s:s + step, :, None])[:, :, 0]
    return out


def bf16_candidates(f: Factored, k: int, *, block_rows: int | None = None) -> Candidates:
    """Edges to every row's ``k + k // 8`` best columns picked by a bfloat16 product, rescored exactly, plus
    the exact ``k`` best rows of every column that fewer than ``k // 4`` rows picked.

    ``f``: [n_a, n_b] factored similarity. Blocks of ``block_rows`` rows of the bf16 product (at most 64M
    entries each by default) are held at a time. bfloat16 keeps 8 significant bits, so a pick can differ from
    the exact top-k only among partners within about 1 % of each other (the margin ``k // 8`` absorbs most
    such swaps); edge values are float32 dot products of the factors. Columns are not searched in the bf16
    product: on square dictionaries nearly every column is picked by many rows, and the few that are not
    (set by ``k // 4``) get an exact float32 search of their own, so every column has edges.
    """
    n_a, n_b = f.shape
    kr = min(k + k // 8, n_b)
    left, right = f.left.to(torch.bfloat16), f.right.to(torch.bfloat16)
    step = block_rows_for(block_rows, n_b)
    row_picks = torch.empty((n_a, kr), dtype=torch.long)
    for r0 in progress(range(0, n_a, step), desc="bf16 candidates", unit="block"):
        r1 = min(n_a, r0 + step)
        row_picks[r0:r1] = (left[r0:r1] @ right.T).topk(kr, dim=1, sorted=False).indices
    rv = partner_scores(f.left, f.right, row_picks)
    rows, cols, vals = [np.repeat(np.arange(n_a), kr)], [row_picks.numpy().ravel()], [rv.numpy().ravel()]
    indegree = torch.bincount(row_picks.reshape(-1), minlength=n_b)
    lonely = torch.nonzero(indegree < max(1, k // 4)).squeeze(1)
    kc = min(k, n_a)
    for c0 in range(0, lonely.numel(), step):
        cs = lonely[c0:c0 + step]
        v, i = (f.right[cs] @ f.left.T).topk(kc, dim=1, sorted=False)
        rows.append(i.numpy().ravel())
        cols.append(np.repeat(cs.numpy(), kc))
        vals.append(v.double().numpy().ravel())
    return unique_edges(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n_b)


def spherical_kmeans(x: torch.Tensor, n_cells: int, *, iters: int = 6, train_per_cell: int = 128,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster unit rows ``x`` [n, d] by cosine: returns unit centroids [n_cells, d] and each row's cell [n].

    Centroids are fitted on a random sample of ``train_per_cell × n_cells`` rows, then every row is assigned.
    """
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=gen)
    cent = x[order[:n_cells]].clone()
    train = x[order[:min(x.shape[0], train_per_cell * n_cells)]]  # centroids fitted on a sample; every row assigned
    for _ in range(iters):
        cell = (train @ cent.T).argmax(1)
        sums = torch.zeros_like(cent).index_add_(0, cell, train)
        norms = sums.norm(dim=1, keepdim=True)
        empty = norms.squeeze(1) == 0
        cent = torch.where(empty[:, None], cent, sums / norms.clamp_min(1e-30))
    return cent, (x @ cent.T).argmax(1)


class InvertedFiles:
    """Both sides of a factored similarity clustered into cells, for two-way inverted-file candidate search.

    ``f``: [n_a, n_b] factored similarity with unit rows. Each side's rows are split into ``n_cells``
    (default √n) cells by :func:`spherical_kmeans`. A row of A *probes* the ``n_probe`` cells of B whose
    centroids are most similar to it and keeps its ``k`` best columns there; each column does the same
    over A's cells. An edge is kept when either search finds it.
    """

    def __init__(self, f: Factored, *, n_cells: int | None = None, seed: int = 0):
        self.f = f
        n_a, n_b = f.shape
        self.cent_b, self.cell_b = spherical_kmeans(f.right, min(n_b, int(n_cells or max(1, round(np.sqrt(n_b))))), seed=seed)
        self.cent_a, self.cell_a = spherical_kmeans(f.left, min(n_a, int(n_cells or max(1, round(np.sqrt(n_a))))), seed=seed + 1)

    def probes_needed(self, n_sample: int, seed: int = 0) -> int | None:
        """Fewest probes (of 8, 16, 32, and at most a quarter of the cells) with which every sampled row's and
        column's exact best partner would be reached (its cell probed by the row, or the row's cell probed by
        the partner); None if none is enough.

        Samples ``n_sample`` rows and as many columns; costs their exact full rows/columns, no candidate search.
        """
        f = self.f
        rows, best_col, cols, best_row = _sampled_best(f, n_sample, seed)
        t = torch.from_numpy
        pairs_a = np.concatenate([rows, best_row])  # (row of A, column of B) pairs that must be reached
        pairs_b = np.concatenate([best_col, cols])
        rank_ab = _cell_rank(f.left[t(pairs_a)], self.cent_b, self.cell_b[t(pairs_b)])  # rank of B's cell for the row
        rank_ba = _cell_rank(f.right[t(pairs_b)], self.cent_a, self.cell_a[t(pairs_a)])
        most = min(self.cent_a.shape[0], self.cent_b.shape[0]) // 4  # beyond, IVF scans > half the product
        for n_probe in (p for p in _PROBES if p <= max(most, _PROBES[0])):
            if bool(((rank_ab < n_probe) | (rank_ba < n_probe)).all()):
                return n_probe
        return None

    def candidates(self, k: int, n_probe: int = 8) -> Candidates:
        """Edges found by the two-way search with ``n_probe`` probes; values are float32 block products."""
        n_b = self.f.shape[1]
        r1, c1, v1 = _ivf_one_way(self.f.left, self.f.right, k, self.cent_b, self.cell_b, n_probe)
        c2, r2, v2 = _ivf_one_way(self.f.right, self.f.left, k, self.cent_a, self.cell_a, n_probe)
        return unique_edges(np.concatenate([r1, r2]), np.concatenate([c1, c2]), np.concatenate([v1, v2]), n_b)


def ivf_candidates(f: Factored, k: int, *, n_cells: int | None = None, n_probe: int = 8, seed: int = 0) -> Candidates:
    """Two-way inverted-file candidates of ``f`` [n_a, n_b]: see :class:`InvertedFiles`."""
    return InvertedFiles(f, n_cells=n_cells, seed=seed).candidates(k, n_probe)


def _cell_rank(x: torch.Tensor, cent: torch.Tensor, cell: torch.Tensor) -> np.ndarray:
    """For each row of ``x`` [m, d]: how many centroids are more similar to it than that of its given ``cell`` [m]."""
    s = x @ cent.T
    return (s > s.gather(1, cell[:, None])).sum(1).numpy()


def _ivf_one_way(mine: torch.Tensor, theirs: torch.Tensor, k: int, cent: torch.Tensor, cell_of: torch.Tensor,
                 n_probe: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row of ``mine`` [n, d]: its ``k`` best rows of ``theirs`` [m, d] within its ``n_probe`` nearest cells
    (at most ``max(8, 2k / n_probe)`` from any one cell)."""
    n, m = mine.shape[0], theirs.shape[0]
    n_cells = cent.shape[0]
    n_probe = min(n_probe, n_cells)
    probes = (mine @ cent.T).topk(n_probe, dim=1).indices  # [n, n_probe]
    members_of = torch.argsort(cell_of, stable=True)
    size = torch.bincount(cell_of, minlength=n_cells)
    start = torch.cumsum(size, 0) - size
    flat = probes.reshape(-1)
    by_cell = torch.argsort(flat, stable=True)
    asks = torch.bincount(flat, minlength=n_cells)
    ask_start = torch.cumsum(asks, 0) - asks
    kk = min(k, m)
    per_cell = min(kk, max(8, -(-2 * kk // n_probe)))  # kept per probed cell: bounded memory at 32 probes
    best_v = torch.full((n * n_probe, per_cell), -torch.inf, dtype=mine.dtype)  # row r's slot s at r * n_probe + s
    best_i = torch.zeros((n * n_probe, per_cell), dtype=torch.int32)
    with _threads(_IVF_THREADS):
        for c in range(n_cells):
            sz, na = int(size[c]), int(asks[c])
            if sz == 0 or na == 0:
                continue
            members = members_of[int(start[c]):int(start[c]) + sz]
            who = by_cell[int(ask_start[c]):int(ask_start[c]) + na]
            v, i = (mine[who // n_probe] @ theirs[members].T).topk(min(per_cell, sz), dim=1, sorted=False)
            best_v[who, :v.shape[1]] = v
            best_i[who, :v.shape[1]] = members[i].to(torch.int32)
    v, pick = best_v.reshape(n, -1).topk(min(kk, n_probe * per_cell), dim=1, sorted=False)
    i = best_i.reshape(n, -1).gather(1, pick).long()
    ok = torch.isfinite(v)
    src = torch.arange(n)[:, None].expand(n, v.shape[1])
    return src[ok].numpy(), i[ok].numpy(), v[ok].double().numpy()


def sampled_best_recall(f: Factored, cand: Candidates, n_sample: int, seed: int = 0) -> tuple[float, int]:
    """Fraction of sampled rows and columns whose exact best partner (full float32 row/column) is an edge.

    Samples ``min(n_sample, n)`` rows of A and as many columns of B without replacement. Returns
    ``(recall, n_checked)``. With no miss among m checks, the miss rate is below 3/m at 95 % confidence.
    """
    n_b = f.shape[1]
    rows, best_col, cols, best_row = _sampled_best(f, n_sample, seed)
    keys = cand.rows.astype(np.int64) * n_b + cand.cols  # sorted: unique_edges returns edges in key order
    wanted = np.concatenate([rows.astype(np.int64) * n_b + best_col, best_row.astype(np.int64) * n_b + cols])
    pos = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    hit = keys[pos] == wanted
    return float(hit.mean()), int(hit.size)


def _sampled_best(f: Factored, n_sample: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random rows and their exact best columns, random columns and their exact best rows (float32 full scans)."""
    n_a, n_b = f.shape
    gen = np.random.default_rng(seed)
    rows = gen.choice(n_a, min(n_sample, n_a), replace=False)
    cols = gen.choice(n_b, min(n_sample, n_b), replace=False)
    t = torch.from_numpy
    best_col = (f.left[t(rows)] @ f.right.T).argmax(1).numpy()
    best_row = (f.right[t(cols)] @ f.left.T).argmax(1).numpy()
    return rows, best_col, cols, best_row
