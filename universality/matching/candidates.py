"""Candidate graphs for sparse assignment: exact, product, projected and inverted-file searches, edges rescored exactly.

A candidate graph holds, for every row and every column of a similarity, a few of its best partners. The
searches build it from a :class:`~universality.matching.similarity.Factored` similarity ``left @ right.T``:

- ``"exact"``: float32 blocked product, exact top-k per row and per column (:func:`topk_candidates`).
- ``"fp32"`` / ``"bf16"``: a blocked product of the factors in float32 / bfloat16, used only to *pick* each row's
  ``k + k // 8`` best partners (a compiled exact top-k of each product row, :mod:`._select`); every picked edge
  is then rescored from the float32 factors. Columns that few rows picked get an exact search of their own.
  bfloat16 is fast only where the CPU computes it natively (AMX, AVX-512 BF16); on AVX2-only CPUs it is
  emulated and far slower than float32 (:func:`universality.precision.bf16_pays` measures which).
- ``"projected"``: picks (``max(4, k // 4)`` per row) from the product of the factors projected on a random
  ``dims``-dimensional subspace (128 by default: 1/4 of the product at d = 512, 1/6 at d = 768), rescored
  exactly, in bfloat16 where :func:`~universality.precision.bf16_pays` says so, else in float32
  (``"projected-bf16"`` / ``"projected-fp32"`` fix the precision). The projection keeps strong pairs (a
  planted partner at cosine 0.9 stays far above the projected noise of unrelated pairs) but scrambles the order
  among weak ones, so ``"auto"`` only keeps it when a sampled check passes (below).
- ``"ivf"``: inverted file. Each side is clustered by spherical k-means; each row searches only the columns
  of its ``n_probe`` nearest cells and vice versa (explicit use only; float32).

``"auto"`` searches exactly for small or dense inputs. Otherwise it picks the product precision once
(:func:`~universality.precision.bf16_pays`: ``UNIVERSALITY_BF16`` or the cached probe), draws 256 rows and 256
columns at random and computes their exact best partners (full float32 rows/columns). It tries projections of
64, then 128 dimensions (each only on factors at least twice as wide): the first that ranks every sampled best
partner within the first half of its row's picks (the *plan check*) is built, and the graph is checked to hold
every one of those sampled pairs; if no plan check passes (a projection that places fewer than half of them
ends the trials) or the graph misses one, it runs the full product search (``"bf16"`` or ``"fp32"``). Edge values are float32 dot products of the factors whatever the search (float64 in the graph), so
the matching solved on the graph is exact on its edges. The :class:`SearchReport` names the search and the
precision that ran.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import precision as _precision
from .._errors import UniversalityError
from .._progress import progress
from ._blocked import for_each_row_block
from ._inputs import check_positive_int
from ._select import pair_dots, row_topk_bf16, row_topk_f32
from .similarity import Candidates, Factored, as_similarity, block_rows_for, topk_candidates, unique_edges

SEARCHES = ("auto", "exact", "fp32", "bf16", "projected", "projected-fp32", "projected-bf16", "ivf")
_IVF_THREADS = 1  # the per-cell blocks are small: one thread beats waking a pool for each
_SMALL = 1 << 22  # similarities below which "auto" simply searches exactly
_PROJECTED_DIMS = (32, 64, 128)  # widths of the projected search, cheapest first; each used only on factors at least twice as wide
_PROBES = (8, 16, 32)  # cells each row searches; "auto" takes the fewest that reach every sampled best partner


class SearchReport(NamedTuple):
    """Which candidate search built a graph and what its recall check saw."""

    search: str
    """The search that produced the graph: ``"exact"``, ``"fp32"``, ``"bf16"``, ``"projected-fp32"``,
    ``"projected-bf16"`` or ``"ivf"`` (``"projected"`` is always reported with the precision that ran)."""
    sampled_recall: float | None
    """Fraction of sampled rows' and columns' exact best partners present in the graph (None: not checked)."""
    n_sampled: int
    """How many rows plus columns were checked."""
    tried: tuple[str, ...]
    """Searches attempted, in order, e.g. ``("projected-fp32",)`` (accepted), ``("projected-fp32", "fp32")``
    (built, rejected by the check), ``("projected-fp32-plan(64,128)", "fp32")`` (the plan checks of both widths
    failed: nothing built),
    ``("bf16",)``."""
    precision: str = "float32"
    """dtype of the product that picked the candidates: ``"float32"`` or ``"bfloat16"`` (edge values are float32
    dot products of the factors either way)."""


def candidate_graph(similarity: Any, k: int, search: str = "auto", *, block_rows: int | None = None,
                    n_sample: int = 256, seed: int = 0) -> tuple[Candidates, SearchReport]:
    """A candidate graph with about ``k`` best partners per row and per column of ``similarity``.

    ``similarity``: dense [n_a, n_b] or :class:`Factored`; ``search``: one of :data:`SEARCHES` (all but
    ``"exact"`` need factors; ``"auto"`` and ``"projected"`` run their products in bfloat16 only where
    :func:`universality.precision.bf16_pays`). ``n_sample``: rows and columns whose exact best partner is
    checked (``"auto"``, ``"projected"``, ``"ivf"``). Returns the graph (edge values float64) and a
    :class:`SearchReport`.
    """
    if search not in SEARCHES:
        raise UniversalityError(f"search must be one of {', '.join(SEARCHES)}; got {search!r}")
    k = check_positive_int(k, "k")
    sim = as_similarity(similarity)
    factored = isinstance(sim, Factored)
    if search not in ("auto", "exact") and not factored:
        raise UniversalityError(f"search {search!r} needs a Factored similarity (e.g. cosine_factors(x_a, x_b)), not a dense matrix")
    n_a, n_b = sim.shape
    if search == "exact" or (search == "auto" and (not factored or n_a * n_b <= _SMALL)):
        cand = topk_candidates(sim, k, block_rows=block_rows)
        return cand, SearchReport("exact", None, 0, ("exact",))
    if search in ("fp32", "bf16"):
        return _product(sim, k, search, block_rows, ())
    full = "bf16" if _precision.bf16_pays() else "fp32"  # the one precision decision for "auto" and "projected"
    widths = [w for w in _PROJECTED_DIMS if 2 * w <= sim.left.shape[1]]
    if search == "auto" and not widths:  # a projection would save too little
        return _product(sim, k, full, block_rows, ())
    sample = SampledBest.draw(sim, n_sample, seed)
    if search == "ivf":
        cells = InvertedFiles(sim, seed=seed)
        n_probe = cells.probes_needed(sample) or _PROBES[-1]
        cand = cells.candidates(k, n_probe)
        return cand, SearchReport("ivf", sample.recall(cand), sample.size, (f"ivf({n_probe})",))
    name = search if search.startswith("projected-") else f"projected-{full}"
    dtype = _DTYPES[name.removeprefix("projected-")]
    planned = []
    for dims in widths or [min(_PROJECTED_DIMS[-1], sim.left.shape[1])]:  # the narrowest whose plan check passes
        proj = Projection(sim, dims, seed=seed, dtype=dtype)
        planned.append(str(proj.dims))
        reached = proj.reached(sample, k)
        if reached == 1.0 or reached < 0.5:  # passed; or so far off that a wider projection will not pass either
            break
    if reached < 1.0 and search == "auto":
        return _product(sim, k, full, block_rows, (f"{name}-plan({','.join(planned)})",))
    cand = proj.candidates(k, block_rows=block_rows)
    recall = sample.recall(cand)
    if search != "auto" or recall == 1.0:
        return cand, SearchReport(name, recall, sample.size, (f"{name}({proj.dims})",), _PRECISION[dtype])
    graph, report = _product(sim, k, full, block_rows, (f"{name}({proj.dims})",))
    return graph, report._replace(sampled_recall=recall, n_sampled=sample.size)


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_PRECISION = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


def _product(f: Factored, k: int, name: str, block_rows: int | None, tried: tuple[str, ...]) -> tuple[Candidates, SearchReport]:
    """The full product search ``name`` (``"fp32"`` or ``"bf16"``) with its report, after the searches ``tried``."""
    cand = product_candidates(f, k, _DTYPES[name], block_rows=block_rows)
    return cand, SearchReport(name, None, 0, tried + (name,), _PRECISION[_DTYPES[name]])


@contextlib.contextmanager
def _threads(n: int):
    """Run torch ops with ``n`` threads (the per-cell blocks are small; a thread pool only waits on them)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, old)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def row_picks(left: torch.Tensor, right: torch.Tensor, k: int, *, block_rows: int | None = None,
              desc: str = "product candidates", with_values: bool = False) -> Any:
    """[n_a, k] int64: each row's ``k`` largest entries of the product ``left @ right.T`` (``left`` [n_a, d],
    ``right`` [n_b, d], both float32 or both bfloat16, the product in that dtype); with ``with_values``, also
    their values [n_a, k] in that dtype (a pair ``(picks, values)``).

    Blocks of ``block_rows`` rows (default :func:`thread_block_rows`) are shared by ``torch.get_num_threads()``
    worker threads, each computing its block single-threaded into its own buffer and selecting from it at once
    (:func:`._blocked.for_each_row_block`); the top-k of each block is exact in the product's dtype
    (:func:`._select.row_topk_bf16` / :func:`._select.row_topk_f32`)."""
    if left.dtype != right.dtype or left.dtype not in _PRECISION:
        raise UniversalityError(f"row_picks needs two float32 or two bfloat16 factors, got {left.dtype} and {right.dtype}")
    n_a, n_b = left.shape[0], right.shape[0]
    step = thread_block_rows(n_b, left.shape[1]) if block_rows is None else block_rows_for(block_rows, n_b)
    select = row_topk_bf16 if left.dtype == torch.bfloat16 else row_topk_f32
    picks = torch.empty((n_a, k), dtype=torch.long)
    values = torch.empty((n_a, k), dtype=left.dtype) if with_values else None
    buffers: dict[int, torch.Tensor] = {}
    right_t = right.T

    def work(worker: int, r0: int, r1: int) -> None:
        if worker not in buffers:
            buffers[worker] = torch.empty((min(step, n_a), n_b), dtype=left.dtype)
        block = torch.matmul(left[r0:r1], right_t, out=buffers[worker][:r1 - r0])
        picks[r0:r1] = select(block, k, threads=1)
        if values is not None:
            values[r0:r1] = block.gather(1, picks[r0:r1])

    for_each_row_block(n_a, step, work, desc=desc)
    return (picks, values) if with_values else picks


def thread_block_rows(n_b: int, d: int) -> int:
    """Rows per block of a product with ``n_b`` columns over ``d`` dimensions done by one thread.

    When the column factors are small (``n_b × d`` ≤ 2M entries, e.g. a projection) blocks of ~2M entries
    (8 MB in float32, at least 32 rows) keep the block in cache between the matmul and the selection (at 16K
    × 32 dims: 0.34 CPU-s against 0.55 with 1024-row blocks). Otherwise up to 16M entries (64 MB in float32),
    between 256 rows (fewer would make the matmul re-pack the column factors, then read from memory, too
    often) and 1024."""
    if n_b * d <= 1 << 21:
        return int(max(32, min(1024, (1 << 21) // max(1, n_b))))
    return int(max(256, min(1024, (1 << 24) // max(1, n_b))))


def rescored_graph(f: Factored, picks: torch.Tensor, k: int, lonely_below: int,
                   values: torch.Tensor | None = None) -> Candidates:
    """Edges from every row to its ``picks`` [n_a, K] with exact (float32 factor) values, plus the exact ``k``
    best rows of every column that fewer than ``lonely_below`` rows picked (so every column has edges).
    ``values`` [n_a, K]: the picks' float32 dot products when the picking product already computed them (a
    float32 product of the factors themselves); None rescores every pick."""
    n_a, n_b = f.shape
    rows = np.repeat(np.arange(n_a, dtype=np.int64), picks.shape[1])
    cols = picks.numpy().ravel()
    vals = pair_dots(f.left, f.right, rows, cols) if values is None else values.double().numpy().ravel()
    rows, cols, vals = [rows], [cols], [vals]
    indegree = torch.bincount(picks.reshape(-1), minlength=n_b)
    lonely = torch.nonzero(indegree < max(1, lonely_below)).squeeze(1)
    kc = min(k, n_a)
    step = block_rows_for(None, n_a)
    for c0 in range(0, lonely.numel(), step):
        cs = lonely[c0:c0 + step]
        v, i = (f.right[cs] @ f.left.T).topk(kc, dim=1, sorted=False)
        rows.append(i.numpy().ravel())
        cols.append(np.repeat(cs.numpy(), kc))
        vals.append(v.double().numpy().ravel())
    return unique_edges(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n_b)


def product_candidates(f: Factored, k: int, dtype: torch.dtype = torch.float32, *,
                       block_rows: int | None = None) -> Candidates:
    """Edges to every row's ``k + k // 8`` best columns picked by a ``dtype`` (float32 or bfloat16) product,
    rescored exactly, plus the exact ``k`` best rows of every column that fewer than ``k // 4`` rows picked.

    ``f``: [n_a, n_b] factored similarity. Blocks of ``block_rows`` rows of the product (at most 64M entries
    each by default) are held at a time. In float32 the picks are each row's exact top ``k + k // 8`` up to
    float32 rounding; bfloat16 keeps 8 significant bits, so a pick can differ from the exact top-k only among
    partners within about 1 % of each other (the margin ``k // 8`` absorbs most such swaps). Edge values are
    float32 dot products of the factors: in float32 the product's own entries, in bfloat16 rescored from the
    float32 factors. Columns are not searched in the product: on square dictionaries
    nearly every column is picked by many rows, and the few that are not (set by ``k // 4``) get an exact
    float32 search of their own, so every column has edges.
    """
    if dtype not in _PRECISION:
        raise UniversalityError(f"the product search runs in torch.float32 or torch.bfloat16, not {dtype}")
    kr = min(k + k // 8, f.shape[1])
    exact = dtype == f.left.dtype == f.right.dtype == torch.float32  # the product's entries are the edge values
    picks = row_picks(f.left.to(dtype), f.right.to(dtype), kr, block_rows=block_rows,
                      desc=f"{_PRECISION[dtype]} candidates", with_values=exact)
    picks, values = picks if exact else (picks, None)
    return rescored_graph(f, picks, k, k // 4, values)


def bf16_candidates(f: Factored, k: int, *, block_rows: int | None = None) -> Candidates:
    """:func:`product_candidates` in bfloat16 (whether or not it pays on this CPU)."""
    return product_candidates(f, k, torch.bfloat16, block_rows=block_rows)


def fp32_candidates(f: Factored, k: int, *, block_rows: int | None = None) -> Candidates:
    """:func:`product_candidates` in float32."""
    return product_candidates(f, k, torch.float32, block_rows=block_rows)


class Projection:
    """Both factors of ``f`` [n_a, n_b] projected on the same random ``dims``-dimensional subspace (orthonormal
    basis from a seeded Gaussian) and scaled to unit rows, in ``dtype`` (bfloat16 where
    :func:`universality.precision.bf16_pays`, else float32; None asks it).

    ``left_p @ right_p.T`` is the cosine of the projected rows: it estimates ``f``'s cosine at ``dims / d`` of
    the cost, with an error of about ``sin θ / sqrt(dims)`` for a pair at angle θ (unrelated rows scatter by
    ``1 / sqrt(dims)``, a pair at cosine 0.9 by only ~0.45 / sqrt(dims)). Scaling the projected rows removes
    the spread of their lengths (~``1 / sqrt(2 dims)``), which would otherwise add to every pair's error.
    """

    def __init__(self, f: Factored, dims: int = _PROJECTED_DIMS[-1], *, seed: int = 0, dtype: torch.dtype | None = None):
        self.f = f
        if dtype is None:
            dtype = torch.bfloat16 if _precision.bf16_pays() else torch.float32
        if dtype not in _PRECISION:
            raise UniversalityError(f"the projected search runs in torch.float32 or torch.bfloat16, not {dtype}")
        self.dtype = dtype
        d = f.left.shape[1]
        self.dims = min(check_positive_int(dims, "dims"), d)
        gen = torch.Generator().manual_seed(seed)
        basis = torch.linalg.qr(torch.randn(d, self.dims, generator=gen, dtype=torch.float64))[0].to(f.left.dtype)
        self.left = _unit(f.left @ basis).to(dtype)  # a coarse filter: bfloat16 inputs are precise enough
        self.right = _unit(f.right @ basis).to(dtype)

    def reached(self, sample: "SampledBest", k: int) -> float:
        """Fraction of the sampled pairs (row, its exact best column; column, its exact best row) that rank
        within the first *half* of their row's :func:`projected_picks` by projected score, so that
        :meth:`candidates` picks them with a margin (pairs near the edge of the picks in the sample mean that
        others fall beyond it). ``"auto"`` builds the projected graph only when this is 1."""
        rows, cols = sample.pairs()
        t = torch.from_numpy
        scores = self.left[t(rows)] @ self.right.T  # [m, n_b] in the search's dtype, like its blocks
        own = scores.gather(1, t(cols)[:, None])
        return float(((scores > own).sum(1) < max(1, projected_picks(k, self.f.shape[1]) // 2)).double().mean())

    def reaches(self, sample: "SampledBest", k: int) -> bool:
        """Whether :meth:`reached` is 1: every sampled pair is picked with a margin."""
        return self.reached(sample, k) == 1.0

    def candidates(self, k: int, *, block_rows: int | None = None) -> Candidates:
        """Every row's :func:`projected_picks` best columns by the projected product, rescored exactly, plus
        the exact ``k`` best rows of any column no row picked (:func:`rescored_graph`)."""
        picks = row_picks(self.left, self.right, projected_picks(k, self.f.shape[1]), block_rows=block_rows,
                          desc="projected candidates")
        return rescored_graph(self.f, picks, k, 1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` [n, d] scaled to unit length (zero rows stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)


def projected_picks(k: int, n_b: int) -> int:
    """Columns each row keeps in the projected search: ``max(4, k // 4)`` (at most ``n_b``). The projection only
    separates strong partners from the rest, so a few per row suffice where it is accepted."""
    return min(n_b, max(4, k // 4))


class SampledBest(NamedTuple):
    """Random rows with their exact best columns and random columns with their exact best rows."""

    rows: np.ndarray
    best_col: np.ndarray
    cols: np.ndarray
    best_row: np.ndarray
    n_b: int

    @classmethod
    def draw(cls, f: Factored, n_sample: int, seed: int = 0) -> "SampledBest":
        """``min(n_sample, n)`` rows of A and as many columns of B without replacement; full float32 scans."""
        return cls(*_sampled_best(f, n_sample, seed), f.shape[1])

    @property
    def size(self) -> int:
        """Rows plus columns sampled."""
        return int(self.rows.size + self.cols.size)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled (row, column) pairs that an optimal-looking graph must contain, as two [size] arrays."""
        return np.concatenate([self.rows, self.best_row]), np.concatenate([self.best_col, self.cols])

    def recall(self, cand: Candidates) -> float:
        """Fraction of the sampled pairs that are edges of ``cand`` (whose edges are sorted by row, column)."""
        return float(cand.locate(*self.pairs(), self.n_b)[1].mean())


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

    def probes_needed(self, sample: "SampledBest") -> int | None:
        """Fewest probes (of 8, 16, 32, and at most a quarter of the cells) with which every sampled row's and
        column's exact best partner would be reached (its cell probed by the row, or the row's cell probed by
        the partner); None if none is enough."""
        t = torch.from_numpy
        pairs_a, pairs_b = sample.pairs()  # (row of A, column of B) pairs that must be reached
        rank_ab = _cell_rank(self.f.left[t(pairs_a)], self.cent_b, self.cell_b[t(pairs_b)])  # rank of B's cell for the row
        rank_ba = _cell_rank(self.f.right[t(pairs_b)], self.cent_a, self.cell_a[t(pairs_a)])
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
    sample = SampledBest.draw(f, n_sample, seed)
    return sample.recall(cand), sample.size


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
