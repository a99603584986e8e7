"""Induction components compared across architectures: one row of the depth map per host pair.

Does the layer where one host does induction (say a Mamba's) match the layer where another does it (the
Transformer's induction-head layer) better than every other layer pair does? :func:`induction_match`
answers on dictionaries trained at every layer of both hosts, in numbered phases:

1. **Tokens** — an induction-rich mix: half the rows are repeated random halves (the induction probe's own
   task, :func:`~universality.analysis.repeated_halves`), half are ordinary text windows. Text alone has few
   repeats, so induction latents would hardly be trained; random rows alone are off the distribution the
   models learnt language on. Half and half is also the circuits zoo's own training mix. A *fit* set trains
   the dictionaries and picks the induction latents; a separate *eval* set (other random rows, other text)
   measures every number below, so the selection is not scored on the tokens that chose it.
2. **Dictionaries** — one TopK SAE per (host, layer) at ``hook`` (default the mixer output: the component the
   induction localisation ablates).
3. **Induction latents** — per dictionary, the ``n_induction`` latents whose mean activation differs most
   between the second copy and the first copy of the repeated rows, in pooled standard deviations.
4. **MPPC per layer pair** — from per-sequence sufficient statistics (Σa, Σa², Σb, Σb², Σab), so resampling
   sequences costs a weighted sum. Two rows per pair: *all* live latents, and *induction* latents only (A's
   induction latents against B's). The score of a cell is the mean of both directions' mean MPPC.
5. **Intervals and null** — a bootstrap over sequences (stratified: repeated rows and text rows resampled
   apart) for every cell and for the *margin* of the localised pair over the best other cell of its row and
   column; a shuffled-rows null (B's sequences re-paired at random with A's, repeated rows among repeated
   rows, so position and copy structure stay and only the token-level alignment is broken), with the
   permutation p-value ``(1 + #{null ≥ observed}) / (1 + n_permutations)`` (:func:`universality.matching.stats.permutation_p_value`, as in :mod:`universality.matching.geometry`).
6. **Verdict** — a match is claimed for a row when the localised pair's margin interval lies above 0 and its
   null p-value is below ``alpha``.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from .._errors import UniversalityError
from .._progress import progress
from .._records import require_keys
from ._points import check_arch, finite_or_none
from .tasks import repeated_halves

ROWS = ("all", "induction")
"""The two rows of the depth map: every live latent, and the induction latents only."""


@dataclass
class MatchRow:
    """One row of the depth map: a score per (layer of A, layer of B) with intervals, null and verdict."""

    latents: str
    """``"all"`` (every live latent) or ``"induction"`` (the induction latents of both dictionaries)."""
    values: list[list[float | None]]
    """[L_a][L_b] mean of both directions' mean MPPC (``None``: no live latent)."""
    low: list[list[float | None]]
    """[L_a][L_b] lower end of the bootstrap interval."""
    high: list[list[float | None]]
    """[L_a][L_b] upper end."""
    null_mean: list[list[float | None]]
    """[L_a][L_b] mean score under the shuffled-rows null."""
    p_value: list[list[float | None]]
    """[L_a][L_b] permutation p-value of the observed score against that null."""
    best_in_row: bool | None = None
    """The localised pair scores highest in its row (the localised layer of A against every layer of B)."""
    best_in_column: bool | None = None
    """The localised pair scores highest in its column."""
    margin: float | None = None
    """Localised score minus the best other score of its row and column (``None``: a 1 × 1 grid or no pair)."""
    margin_low: float | None = None
    """Lower end of the margin's bootstrap interval."""
    margin_high: float | None = None
    """Upper end."""
    claim: bool = False
    """The localised pair matches best: margin interval above 0 and null p-value below ``alpha``."""


@dataclass
class InductionMatch:
    """Host A × host B: the depth-map rows of :data:`ROWS` with the localised induction pair marked."""

    a: str
    """Label of host A (the reference, e.g. the Transformer)."""
    b: str
    """Label of host B."""
    arch_a: str
    """Architecture of A."""
    arch_b: str
    """Architecture of B."""
    hook: str
    """Hook kind the dictionaries read at every layer (e.g. ``mixer_out``)."""
    layers_a: list[int]
    """Row labels: the layers of A."""
    layers_b: list[int]
    """Column labels: the layers of B."""
    layer_a: int | None
    """A's localised induction layer (``None``: not given)."""
    layer_b: int | None
    """B's localised induction layer."""
    rows: list[MatchRow]
    """One :class:`MatchRow` per entry of :data:`ROWS`."""
    n_sequences: int
    """Eval sequences (half repeated rows, half text rows)."""
    n_tokens: int
    """Eval tokens."""
    n_boot: int
    """Bootstrap replicates."""
    n_permutations: int
    """Shuffles of the null."""
    n_induction: int
    """Induction latents per dictionary."""
    note: str = ""
    """Why no pair is localised, when none is."""
    sentence: str = ""
    """One sentence per row: is the localised pair the best match, and how sure are we."""
    induction_latents: dict = field(default_factory=dict)
    """``{"a": [per layer], "b": [per layer]}``: how many induction latents each dictionary has (|t| ≥ ``min_t``)."""

    def row(self, latents: str) -> MatchRow:
        """The row of ``latents`` (one of :data:`ROWS`)."""
        for r in self.rows:
            if r.latents == latents:
                return r
        raise UniversalityError(f"no row {latents!r} in the induction match; rows are {', '.join(r.latents for r in self.rows)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "InductionMatch":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("a", "b", "hook", "layers_a", "layers_b", "rows"), "induction match")
        rows = [MatchRow(**r) for r in d["rows"]]
        keep = {k: v for k, v in d.items() if k != "rows"}
        return cls(rows=rows, **keep)


# ----------------------------------------------------------------------------------------------- phase 1: tokens

def induction_mix(text: torch.Tensor | None, n_rows: int, seq_len: int, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase 1: ``n_rows`` repeated random halves of length ``seq_len`` stacked on ``text`` windows.

    Args:
        text: LongTensor [n_text, seq_len] of ordinary text (``None`` or empty: repeated rows only).
        n_rows: repeated rows.
        seq_len: row length (even; each half is ``seq_len // 2`` distinct random tokens).
        vocab_size: random tokens are drawn from ``[0, vocab_size)``.
        seed: seed of the random rows.

    Returns:
        ``(tokens [n_rows + n_text, seq_len], repeated [n_rows + n_text] bool)``.
    """
    if seq_len < 4 or seq_len % 2:
        raise UniversalityError(f"seq_len must be an even number of at least 4 for repeated halves; got {seq_len!r}")
    rep = repeated_halves(n_rows, seq_len // 2, vocab_size, torch.Generator().manual_seed(seed))
    if text is None or text.numel() == 0:
        return rep, torch.ones(n_rows, dtype=torch.bool)
    if text.dim() != 2 or text.shape[1] != seq_len:
        raise UniversalityError(f"text windows must be [n, {seq_len}] token ids; got shape {tuple(text.shape)}")
    tokens = torch.cat([rep, text.long()])
    return tokens, torch.cat([torch.ones(n_rows, dtype=torch.bool), torch.zeros(len(text), dtype=torch.bool)])


# ------------------------------------------------------------------------------------------ phase 2: dictionaries

@torch.no_grad()
def layer_activations(host, tokens: torch.Tensor, hook: str, batch: int = 64) -> list[torch.Tensor]:
    """[n, t, d] float32 activations of ``blocks.{i}.{hook}`` for every layer ``i`` of ``host``."""
    from ..hosts.names import hook_name

    names = [hook_name(i, hook) for i in range(host.n_layers)]
    parts: list[list[torch.Tensor]] = [[] for _ in names]
    for s in range(0, len(tokens), batch):
        _, cache = host.run_with_cache(tokens[s:s + batch], names=names)
        for i, n in enumerate(names):
            parts[i].append(cache[n].detach().float().cpu())
    return [torch.cat(p) for p in parts]


def _codes(x_fit: torch.Tensor, x_eval: torch.Tensor, n_latents: int, k: int, epochs: int, batch_size: int,
           seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a TopK dictionary on ``x_fit`` [n, t, d]; codes [n, t, n_latents] of ``x_fit`` and ``x_eval``."""
    from .. import sae

    flat = x_fit.reshape(-1, x_fit.shape[-1])
    batch = min(batch_size, len(flat))
    coder = sae.fit(flat, kind="topk", n_latents=n_latents, k=k, seed=seed, batch_size=batch, n_tokens=epochs * len(flat),
                    device="cpu")
    with torch.no_grad():
        enc = lambda x: coder.encode(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1).float()  # noqa: E731
        return enc(x_fit), enc(x_eval)


# ------------------------------------------------------------------------------------ phase 3: induction latents

def induction_latents(codes: torch.Tensor, repeated: torch.Tensor, n: int, min_t: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Phase 3: up to ``n`` latents whose activation differs most between the second and the first copy.

    Args:
        codes: [n_seq, t, n_latents] codes; rows with ``repeated`` True are two copies of ``t // 2`` tokens.
        repeated: [n_seq] bool.
        n: most latents kept.
        min_t: smallest |Welch t| (second copy against first copy, the first token of each copy left out) a latent
            needs; with a few hundred latents, chance alone rarely passes 4.

    Returns:
        ``(indices [m ≤ n] int64, t [n_latents] float64)``: the kept latents, largest |t| first, and every latent's t.
    """
    rows = codes[repeated].double()
    if len(rows) == 0:
        raise UniversalityError("induction latents need at least one repeated row")
    half = rows.shape[1] // 2
    first, second = rows[:, 1:half].reshape(-1, rows.shape[-1]), rows[:, half + 1:].reshape(-1, rows.shape[-1])
    se = (first.var(0) / len(first) + second.var(0) / len(second)).sqrt()
    t = torch.where(se > 0, (second.mean(0) - first.mean(0)) / se.clamp_min(1e-300), torch.zeros_like(se))
    order = t.abs().argsort(descending=True)[:n]
    keep = order[t.abs()[order] >= min_t]
    return keep.numpy().astype(np.int64), t.numpy()


# ----------------------------------------------------------------------------------------------- phase 4: MPPC

@dataclass
class _CellStats:
    sa: np.ndarray    # [n_seq, na] per-sequence Σa
    saa: np.ndarray   # [n_seq, na] Σa²
    sb: np.ndarray    # [n_seq, nb]
    sbb: np.ndarray   # [n_seq, nb]
    sab: np.ndarray   # [n_seq, na, nb] Σab
    t: int            # tokens per sequence


def _cell_stats(ca: torch.Tensor, cb: torch.Tensor) -> _CellStats:
    a, b = ca.double(), cb.double()
    return _CellStats(a.sum(1).numpy(), (a * a).sum(1).numpy(), b.sum(1).numpy(), (b * b).sum(1).numpy(),
                      torch.bmm(a.transpose(1, 2), b).numpy(), int(a.shape[1]))


def _correlations(n: np.ndarray, sa, saa, sb, sbb, sab) -> np.ndarray:
    """[..., na, nb] Pearson r from (batched) sums; NaN where a side has no variance."""
    va = n[..., None] * saa - sa * sa
    vb = n[..., None] * sbb - sb * sb
    cov = n[..., None, None] * sab - sa[..., :, None] * sb[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        ia = np.where(va > 1e-9 * np.maximum(n[..., None] * saa, 1e-300), 1.0 / np.sqrt(np.abs(va)), np.nan)
        ib = np.where(vb > 1e-9 * np.maximum(n[..., None] * sbb, 1e-300), 1.0 / np.sqrt(np.abs(vb)), np.nan)
        return cov * ia[..., :, None] * ib[..., None, :]


def _score(r: np.ndarray, rows: np.ndarray | None, cols: np.ndarray | None) -> np.ndarray:
    """[...] mean of both directions' mean MPPC over the sub-matrix ``r[..., rows, cols]``; dead latents (NaN) left out."""
    if rows is not None:
        if len(rows) == 0 or len(cols) == 0:
            return np.full(r.shape[:-2], np.nan)
        r = r[..., rows, :][..., :, cols]
    filled = np.where(np.isnan(r), -np.inf, r)
    with _quiet():
        ab, ba = filled.max(axis=-1), filled.max(axis=-2)
        ab, ba = np.where(np.isfinite(ab), ab, np.nan), np.where(np.isfinite(ba), ba, np.nan)
        return (np.nanmean(ab, axis=-1) + np.nanmean(ba, axis=-1)) / 2


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's warnings about all-NaN slices (dead dictionaries give NaN scores on purpose)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _weighted(stats: _CellStats, w: np.ndarray) -> np.ndarray:
    """[n_w, na, nb] r for sequence weights ``w`` [n_w, n_seq]."""
    n = w.sum(1) * stats.t
    sab = (w @ stats.sab.reshape(len(w[0]), -1)).reshape(len(w), *stats.sab.shape[1:])
    return _correlations(n, w @ stats.sa, w @ stats.saa, w @ stats.sb, w @ stats.sbb, sab)


def _shuffled(ca_t, cb_flat, perm: np.ndarray, stats: _CellStats) -> np.ndarray:
    """[na, nb] r when B's sequences are re-paired by ``perm`` (marginal sums unchanged).

    ``ca_t``: A's codes transposed, sparse [na, n_tokens]; ``cb_flat``: B's codes, sparse [n_tokens, nb].
    """
    order = (perm[:, None] * stats.t + np.arange(stats.t)[None]).ravel()
    sab = (ca_t @ cb_flat[order]).toarray()
    n = np.asarray([float(stats.t * len(perm))])
    return _correlations(n, stats.sa.sum(0)[None], stats.saa.sum(0)[None], stats.sb.sum(0)[None], stats.sbb.sum(0)[None], sab[None])[0]


def _sparse(x: torch.Tensor):
    import scipy.sparse as sp

    return sp.csr_matrix(x.double().numpy())


def _strata_boot(repeated: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_seq] sequence counts, resampling repeated rows and text rows separately."""
    w = np.zeros((n_boot, len(repeated)))
    for group in (np.flatnonzero(repeated), np.flatnonzero(~repeated)):
        if len(group):
            picks = rng.integers(0, len(group), size=(n_boot, len(group)))
            for i in range(n_boot):
                np.add.at(w[i], group[picks[i]], 1.0)
    return w


def _strata_perm(repeated: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    perm = np.arange(len(repeated))
    for group in (np.flatnonzero(repeated), np.flatnonzero(~repeated)):
        perm[group] = rng.permutation(group)
    return perm


# ------------------------------------------------------------------------------------------------- the analysis

def induction_match(hosts: Mapping[str, Any], layers: Mapping[str, int | None] | None = None, *, text: torch.Tensor | None = None,
                    text_eval: torch.Tensor | None = None, hook: str = "mixer_out", n_rows: int = 64, seq_len: int = 64,
                    n_latents: int = 256, k: int = 8, epochs: int = 8, batch_size: int = 512, n_induction: int = 16,
                    min_t: float = 4.0, n_boot: int = 200, n_permutations: int = 39, alpha: float = 0.05,
                    reference: str | None = None, seed: int = 0) -> list[InductionMatch]:
    """The induction rows of the depth map for the reference host against every other host (phases in the module docstring).

    Args:
        hosts: label → host; all must take the same token ids (same tokenizer / vocabulary).
        layers: label → localised induction layer (e.g. :attr:`PaperFindings.induction_layer`); ``None`` or a
            missing label: no localised pair for that host (the rows are still measured, nothing is claimed).
        text: [n_text, seq_len] ordinary text windows for the fit set (``None``: repeated rows only).
        text_eval: [n_text', seq_len] other text windows for the eval set (``None``: repeated rows only).
        hook: hook kind read at every block (``mixer_out``, ``resid_post``, ...).
        n_rows: repeated rows in each of the fit and eval sets.
        seq_len: row length (even).
        n_latents: latents of every TopK dictionary.
        k: active latents per token.
        epochs: passes over the fit tokens when training a dictionary.
        batch_size: tokens per training step.
        n_induction: most induction latents per dictionary (the second row).
        min_t: smallest |Welch t| of an induction latent (see :func:`induction_latents`).
        n_boot: bootstrap replicates over sequences.
        n_permutations: shuffles of the null.
        alpha: p-value below which a cell is said to beat the null.
        reference: label of host A (default: the first Transformer, else the first host).
        seed: seed of the random rows, the dictionaries, the bootstrap and the null.

    Returns:
        One :class:`InductionMatch` per other host, reference first.
    """
    if len(hosts) < 2:
        raise UniversalityError(f"induction_match needs at least two hosts; got {len(hosts)}")
    archs = {name: check_arch(h, "induction_match") for name, h in hosts.items()}
    vocab = {name: int(h.vocab_size) for name, h in hosts.items()}
    if len(set(vocab.values())) != 1:
        raise UniversalityError(f"induction_match needs hosts that share one vocabulary; got vocab sizes {vocab}")
    if reference is None:
        reference = next((n for n, a in archs.items() if a == "transformer"), next(iter(hosts)))
    if reference not in hosts:
        raise UniversalityError(f"reference {reference!r} is not one of the hosts ({', '.join(hosts)})")
    for name, v in (("n_rows", n_rows), ("n_latents", n_latents), ("k", k), ("epochs", epochs), ("batch_size", batch_size),
                    ("n_induction", n_induction),
                    ("n_boot", n_boot), ("n_permutations", n_permutations)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UniversalityError(f"induction_match {name} must be a positive integer; got {v!r}")
    if not 0 < alpha < 1:
        raise UniversalityError(f"induction_match alpha must lie strictly between 0 and 1; got {alpha!r}")
    layers = dict(layers or {})

    # 1. tokens
    v = next(iter(vocab.values()))
    fit_tokens, fit_rep = induction_mix(text, n_rows, seq_len, v, seed)
    eval_tokens, eval_rep = induction_mix(text_eval, n_rows, seq_len, v, seed + 1)
    # 2.-3. dictionaries and induction latents per (host, layer)
    codes: dict[str, list[torch.Tensor]] = {}
    chosen: dict[str, list[np.ndarray]] = {}
    counts: dict[str, list[int]] = {}
    for h_index, name in enumerate(progress(list(hosts), desc="induction match: dictionaries", unit="host")):
        host = hosts[name]
        acts_fit, acts_eval = layer_activations(host, fit_tokens, hook), layer_activations(host, eval_tokens, hook)
        codes[name], chosen[name], counts[name] = [], [], []
        for i, (xf, xe) in enumerate(zip(acts_fit, acts_eval)):
            cf, ce = _codes(xf, xe, n_latents, k, epochs, batch_size, seed + 1000 * h_index + 7 * i)  # every dictionary its own seed
            idx, _ = induction_latents(cf, fit_rep, min(n_induction, n_latents), min_t)
            codes[name].append(ce)
            chosen[name].append(idx)
            counts[name].append(int(len(idx)))
    # 4.-6. one InductionMatch per other host
    rep = eval_rep.numpy()
    out = []
    for other in [n for n in hosts if n != reference]:
        out.append(_pair(reference, other, archs, codes, chosen, counts, layers, rep, hook, n_boot, n_permutations,
                         alpha, n_induction, seed))
    return out


def _pair(a: str, b: str, archs, codes, chosen, counts, layers, rep: np.ndarray, hook: str, n_boot: int, n_perm: int,
          alpha: float, n_induction: int, seed: int) -> InductionMatch:
    la_n, lb_n = len(codes[a]), len(codes[b])
    rng = np.random.default_rng(seed)
    boots = _strata_boot(rep, n_boot, rng)
    perms = [_strata_perm(rep, rng) for _ in range(n_perm)]
    shape = (la_n, lb_n)
    point = {r: np.full(shape, np.nan) for r in ROWS}
    reps = {r: np.full((n_boot,) + shape, np.nan) for r in ROWS}
    null = {r: np.full((n_perm,) + shape, np.nan) for r in ROWS}
    for i in range(la_n):
        ca = codes[a][i]
        ca_t = _sparse(ca.reshape(-1, ca.shape[-1])).T.tocsr()
        for j in range(lb_n):
            cb = codes[b][j]
            cb_flat = _sparse(cb.reshape(-1, cb.shape[-1]))
            st = _cell_stats(ca, cb)
            subsets = {"all": (None, None), "induction": (chosen[a][i], chosen[b][j])}
            r0 = _weighted(st, np.ones((1, len(rep))))[0]
            rb = _weighted(st, boots)
            for name, (rows, cols) in subsets.items():
                point[name][i, j] = _score(r0, rows, cols)
                reps[name][:, i, j] = _score(rb, rows, cols)
            for p, perm in enumerate(perms):
                rp = _shuffled(ca_t, cb_flat, perm, st)
                for name, (rows, cols) in subsets.items():
                    null[name][p, i, j] = _score(rp, rows, cols)
    la, lb = layers.get(a), layers.get(b)
    note = ""
    if la is None or lb is None:
        note = f"no localised induction layer for {a if la is None else b}"
    elif not (0 <= la < la_n and 0 <= lb < lb_n):
        raise UniversalityError(f"localised layers ({la}, {lb}) are outside the grid of {la_n} × {lb_n} layers")
    rows = [_row(name, point[name], reps[name], null[name], None if note else (la, lb), alpha) for name in ROWS]
    m = InductionMatch(a, b, archs[a], archs[b], hook, list(range(la_n)), list(range(lb_n)), None if note else la,
                       None if note else lb, rows, len(rep), int(len(rep) * codes[a][0].shape[1]), n_boot, n_perm,
                       n_induction, note, induction_latents={"a": counts[a], "b": counts[b]})
    m.sentence = match_sentence(m)
    return m


def _clean(x: np.ndarray) -> list:
    return [[finite_or_none(float(v)) if np.isfinite(v) else None for v in row] for row in x]


def _row(name: str, point: np.ndarray, reps: np.ndarray, null: np.ndarray, pair: tuple[int, int] | None, alpha: float) -> MatchRow:
    from ..matching.stats import bias_bounded_interval, permutation_p_value

    ivs = [[bias_bounded_interval(point[i, j], reps[:, i, j]) for j in range(point.shape[1])] for i in range(point.shape[0])]
    low = np.array([[iv.low for iv in r] for r in ivs])
    high = np.array([[iv.high for iv in r] for r in ivs])
    with _quiet():
        null_mean = np.nanmean(null, axis=0)
    pval = permutation_p_value(null, point)
    pval = np.where(np.isfinite(point), pval, np.nan)
    row = MatchRow(name, _clean(point), _clean(low), _clean(high), _clean(null_mean), _clean(pval))
    if pair is None:
        return row
    i, j = pair
    if not np.isfinite(point[i, j]):
        return row
    point, reps = np.nan_to_num(point, nan=0.0), np.nan_to_num(reps, nan=0.0)  # no live / induction latents: nothing matches
    row.best_in_row = bool(point[i].max() <= point[i, j])
    row.best_in_column = bool(point[:, j].max() <= point[i, j])
    others = [(i, jj) for jj in range(point.shape[1]) if jj != j] + [(ii, j) for ii in range(point.shape[0]) if ii != i]
    if not others:
        return row
    best_other = max(point[c] for c in others)
    rep_other = np.stack([reps[:, c[0], c[1]] for c in others]).max(axis=0)
    iv = bias_bounded_interval(float(point[i, j] - best_other), reps[:, i, j] - rep_other, method="basic")
    row.margin, row.margin_low, row.margin_high = finite_or_none(iv.estimate), finite_or_none(iv.low), finite_or_none(iv.high)
    row.claim = bool(iv.low > 0 and pval[i, j] < alpha)
    return row


def match_sentence(m: InductionMatch) -> str:
    """One sentence per row: does the localised pair match best, with its margin interval and null p-value."""
    head = f"{m.a} ({m.arch_a}) × {m.b} ({m.arch_b}), {m.hook}"
    if m.layer_a is None or m.layer_b is None:
        return f"{head}: {m.note or 'no localised pair'}, so no induction match is claimed."
    parts = []
    for r in m.rows:
        v = r.values[m.layer_a][m.layer_b]
        p = r.p_value[m.layer_a][m.layer_b]
        if v is None:
            parts.append(f"{r.latents} latents: none at the localised pair"
                         + (" (a layer without induction latents)" if r.latents == "induction" else ""))
            continue
        where = ("best in its row and column" if r.best_in_row and r.best_in_column else
                 "best in its row only" if r.best_in_row else "best in its column only" if r.best_in_column else
                 "not best in its row or column")
        margin = "" if r.margin is None else f", margin {r.margin:+.3f} [{r.margin_low:+.3f}, {r.margin_high:+.3f}]"
        null = "" if p is None else f", null {r.null_mean[m.layer_a][m.layer_b]:.3f} (p = {p:.3f})"
        verdict = "a match is claimed" if r.claim else "no match is claimed"
        parts.append(f"{r.latents} latents {v:.3f} [{r.low[m.layer_a][m.layer_b]:.3f}, {r.high[m.layer_a][m.layer_b]:.3f}], "
                     f"{where}{margin}{null}: {verdict}")
    return f"{head}, localised pair (layer {m.layer_a}, layer {m.layer_b}): " + "; ".join(parts) + "."


def localised_layers(findings: Sequence[Any], min_icl: float | None = None) -> dict[str, int | None]:
    """label → induction layer of each :class:`PaperFindings` (``None`` when its in-context gain is below ``min_icl``)."""
    from .paper_findings import MIN_ICL

    floor = MIN_ICL if min_icl is None else min_icl
    return {f.model: (f.induction_layer if f.icl_score >= floor else None) for f in findings}
