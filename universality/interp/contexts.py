"""Latent contexts: windows of tokens around a latent's activations, drawn from a dictionary's codes over a token stream.

For every latent, :func:`sample_contexts` draws (seeded by ``(seed, latent)``, so any subset of latents gives the
same contexts for a latent):

* **train** activating windows for the explainer: the top activations plus a sample across activation quantiles;
* **test** activating windows, held out from the train ones, stratified over activation quantiles (for scoring);
* **random** non-activating windows: random stretches of the stream where the latent is zero throughout;
* **neighbour** non-activating windows: where a latent with a similar decoder direction fires and this one does not
  (the hard negatives).

A window is ``window`` tokens of one sequence; an activating one places its activating token at offset
``window - window // 4`` (clamped to the sequence), as delphi does. Every window carries the latent's
activation at each of its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import numpy as np
import scipy.sparse as sp

from .._errors import UniversalityError

KIND_TRAIN, KIND_TEST, KIND_RANDOM, KIND_NEIGHBOUR = 0, 1, 2, 3
KIND_NAMES = ("train", "test", "random", "neighbour")


class LatentActivations:
    """Sparse activations of one dictionary over one token stream, read by latent.

    Attributes:
        codes: CSC ``[n_rows, n_latents]`` float32 over flat stream rows (row ``r`` = position ``r % seq_len`` of
            sequence ``r // seq_len``); rows that do not count (BOS/EOS/pad) are all zero.
        tokens: token ids ``[n_sequences, seq_len]`` int64.
        mask: ``[n_sequences, seq_len]`` bool, True where a position counts.
    """

    def __init__(self, codes: sp.spmatrix, tokens: Any, mask: Any):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.mask = np.asarray(mask, dtype=bool)
        if self.tokens.ndim != 2 or self.mask.shape != self.tokens.shape:
            raise UniversalityError("tokens and mask must both be [n_sequences, seq_len] arrays of the same shape")
        codes = sp.csc_matrix(codes, dtype=np.float32)
        if codes.shape[0] != self.tokens.size:
            raise UniversalityError(f"codes have {codes.shape[0]} rows but the token stream has {self.tokens.size} positions; "
                                    "encode the same stream the tokens come from")
        codes.sort_indices()
        self.codes = codes

    @classmethod
    def from_code_store(cls, code_store: Any, stream: Any) -> "LatentActivations":
        """From a :class:`~universality.activations.CodeStore` and the :class:`~universality.data.TokenStream` it encodes."""
        if code_store.manifest.get("stream") not in (None, stream.fingerprint):
            raise UniversalityError(f"code store '{code_store.path}' encodes another token stream than the one given; "
                                    "pass the activation store the codes were made from")
        parts_r, parts_c = [], []
        for rows, csr in code_store.chunks():
            parts_r.append(rows)
            parts_c.append(csr)
        n = int(stream.tokens.numel())
        if not parts_c:
            return cls(sp.csc_matrix((n, code_store.n_latents), dtype=np.float32), stream.tokens.numpy(), stream.mask.numpy())
        rows = np.concatenate(parts_r)
        csr = sp.vstack(parts_c, format="csr") if len(parts_c) > 1 else parts_c[0]
        coo = csr.tocoo()
        full = sp.csc_matrix((coo.data, (rows[coo.row], coo.col)), shape=(n, code_store.n_latents), dtype=np.float32)
        return cls(full, stream.tokens.numpy(), stream.mask.numpy())

    @property
    def n_latents(self) -> int:
        return int(self.codes.shape[1])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    def column(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat rows ``[m]`` (ascending) where latent ``j`` is non-zero, and its values there ``[m]``."""
        lo, hi = self.codes.indptr[j], self.codes.indptr[j + 1]
        return self.codes.indices[lo:hi].astype(np.int64), self.codes.data[lo:hi]

    def frequencies(self) -> np.ndarray:
        """Fraction of counted positions where each latent fires, ``[n_latents]`` float64."""
        n = max(int(self.mask.sum()), 1)
        return np.diff(self.codes.indptr) / n

    def window_acts(self, j: int, starts: np.ndarray, window: int) -> np.ndarray:
        """Latent ``j``'s activation over windows starting at flat rows ``starts`` ``[m]``: ``[m, window]`` float32."""
        rows, vals = self.column(j)
        pos = starts[:, None] + np.arange(window)[None, :]
        if rows.size == 0:
            return np.zeros(pos.shape, dtype=np.float32)
        idx = np.minimum(np.searchsorted(rows, pos), rows.size - 1)
        return np.where(rows[idx] == pos, vals[idx], 0.0).astype(np.float32)

    def window_ids(self, starts: np.ndarray, window: int) -> np.ndarray:
        """Token ids of windows starting at flat rows ``starts`` ``[m]``: ``[m, window]`` int64."""
        flat = self.tokens.reshape(-1)
        return flat[starts[:, None] + np.arange(window)[None, :]]


@dataclass
class ContextConfig:
    """How contexts are drawn for each latent."""

    window: int = 32
    """Tokens per window (cut to the sequence length when sequences are shorter)."""
    n_train: int = 40
    """Activating windows shown to the explainer: half the top activations, half across quantiles."""
    n_test: int = 20
    """Held-out activating windows for the scorers, stratified over activation quantiles."""
    n_random: int = 10
    """Non-activating windows from random rows (held out for the scorers)."""
    n_neighbour: int = 10
    """Non-activating windows where a decoder neighbour fires (hard negatives); random ones fill in without neighbours."""
    n_neighbours: int = 5
    """Decoder neighbours searched per latent."""
    n_quantiles: int = 5
    """Activation quantile bins for the stratified samples."""
    min_examples: int = 8
    """Latents with fewer separate activating windows are left unexplained (too rare to explain and score)."""
    seed: int = 0
    """Seed of every draw; a latent's contexts depend only on the seed and its index."""

    def __post_init__(self):
        for name in ("window", "n_train", "n_test", "n_quantiles", "min_examples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UniversalityError(f"{name} {v!r} is not valid; use an integer of at least 1")
        for name in ("n_random", "n_neighbour", "n_neighbours", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UniversalityError(f"{name} {v!r} is not valid; use an integer of at least 0")
        if self.window < 2:
            raise UniversalityError(f"window {self.window} is not valid; use at least 2 tokens")


class Examples(NamedTuple):
    """Windows of one latent. ``ids``/``acts`` are ``[m, window]``; ``distance`` ``[m]`` is the activation quantile
    (activating windows, 0 = lowest bin) or the neighbour's rank (neighbour windows, -1 for random ones)."""

    ids: np.ndarray
    acts: np.ndarray
    distance: np.ndarray

    @classmethod
    def empty(cls, window: int) -> "Examples":
        return cls(np.zeros((0, window), np.int64), np.zeros((0, window), np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.ids.shape[0])


@dataclass
class LatentContexts:
    """Everything drawn for one latent."""

    latent: int
    train: Examples
    test: Examples
    random: Examples
    neighbour: Examples
    n_active: int
    """Counted positions where the latent fires."""

    @property
    def negatives(self) -> Examples:
        """Random and neighbour non-activating windows together."""
        return Examples(*(np.concatenate([a, b]) for a, b in zip(self.random, self.neighbour)))


def decoder_neighbours(w_dec: Any, k: int, block: int = 2048) -> np.ndarray:
    """Indices ``[n_latents, k]`` of each latent's ``k`` nearest latents by decoder cosine (itself left out).

    ``w_dec`` is ``[n_latents, d]``; the similarity is computed ``block`` rows at a time (``block × n_latents`` floats).
    """
    import torch

    w = torch.as_tensor(np.asarray(w_dec, dtype=np.float32))
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = w.shape[0]
    k = min(k, n - 1)
    out = np.zeros((n, max(k, 0)), dtype=np.int64)
    if k <= 0:
        return out
    for lo in range(0, n, block):
        s = w[lo:lo + block] @ w.T
        s[torch.arange(s.shape[0]), torch.arange(lo, lo + s.shape[0])] = -float("inf")
        out[lo:lo + block] = torch.topk(s, k, dim=1).indices.numpy()
    return out


def _starts_for(rows: np.ndarray, seq_len: int, window: int) -> np.ndarray:
    """Window starts placing each activating row at offset ``window - window // 4``, kept inside its sequence."""
    seq, pos = np.divmod(rows, seq_len)
    start = np.clip(pos - (window - window // 4), 0, seq_len - window)
    return seq * seq_len + start


def _quantile_sample(order_vals: np.ndarray, n: int, n_q: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``order_vals`` (any order) stratified over ``n_q`` equal-count activation bins, and their bin."""
    if n <= 0 or order_vals.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    srt = np.argsort(order_vals, kind="stable")
    bins = np.array_split(srt, n_q)
    per = [n // n_q + (1 if b < n % n_q else 0) for b in range(n_q)]
    idx, q = [], []
    for b, (members, want) in enumerate(zip(bins, per)):
        take = min(want, members.size)
        if take:
            idx.append(rng.choice(members, size=take, replace=False))
            q.append(np.full(take, b))
    if not idx:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(idx), np.concatenate(q)


def _zero_windows(acts: LatentActivations, j: int, cand_rows: np.ndarray, n: int, window: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` window starts (from candidate rows) where latent ``j`` is zero on every token."""
    if n <= 0 or cand_rows.size == 0:
        return np.zeros(0, np.int64)
    starts = np.unique(_starts_for(cand_rows, acts.seq_len, window))
    starts = starts[rng.permutation(starts.size)][: 4 * n]
    a = acts.window_acts(j, starts, window)
    return starts[(a == 0).all(axis=1)][:n]


def contexts_for_latent(acts: LatentActivations, j: int, cfg: ContextConfig,
                        neighbours: np.ndarray | None = None) -> LatentContexts | None:
    """The contexts of latent ``j`` (``None`` when it has fewer than ``cfg.min_examples`` separate activating windows).

    ``neighbours`` ``[k]`` are latent ``j``'s decoder neighbours, nearest first.
    """
    rng = np.random.default_rng([cfg.seed, int(j)])
    w = min(cfg.window, acts.seq_len)
    rows, vals = acts.column(j)
    n_active = int(rows.size)
    # one activating window per block of w tokens: the block's strongest activation
    order = np.argsort(-vals, kind="stable")
    seq, pos = np.divmod(rows[order], acts.seq_len)
    _, first = np.unique(seq * (acts.seq_len // w + 1) + pos // w, return_index=True)
    keep = order[np.sort(first)]
    keep = keep[np.argsort(-vals[keep], kind="stable")]
    if keep.size < cfg.min_examples:
        return None
    cand_rows, cand_vals = rows[keep], vals[keep]
    # held-out test windows first (stratified), then train: top activations + quantile sample of the rest
    n_test = min(cfg.n_test, cand_rows.size // 2)
    t_idx, t_q = _quantile_sample(cand_vals, n_test, cfg.n_quantiles, rng)
    rest = np.setdiff1d(np.arange(cand_rows.size), t_idx)
    n_top = min(cfg.n_train // 2, rest.size)
    top = rest[:n_top]  # ``rest`` is sorted by activation, strongest first
    others = rest[n_top:]
    q_idx, q_q = _quantile_sample(cand_vals[others], cfg.n_train - n_top, cfg.n_quantiles, rng)
    tr_idx = np.concatenate([top, others[q_idx]])
    tr_q = np.concatenate([np.full(top.size, cfg.n_quantiles - 1), q_q])

    def activating(idx: np.ndarray, q: np.ndarray) -> Examples:
        starts = _starts_for(cand_rows[idx], acts.seq_len, w)
        return Examples(acts.window_ids(starts, w), acts.window_acts(j, starts, w), q.astype(np.int64))

    n_nb = cfg.n_neighbour if neighbours is not None and len(neighbours) else 0
    nb_starts, nb_dist = [], []
    if n_nb:
        per = max(1, -(-n_nb // len(neighbours)))
        for rank, nb in enumerate(neighbours):
            r_nb = acts.column(int(nb))[0]
            got = _zero_windows(acts, j, rng.permutation(r_nb)[: 8 * per], min(per, n_nb - len(nb_starts)), w, rng)
            nb_starts.extend(got.tolist())
            nb_dist.extend([rank] * got.size)
            if len(nb_starts) >= n_nb:
                break
    n_rand = cfg.n_random + (cfg.n_neighbour - len(nb_starts))
    counted = np.flatnonzero(acts.mask.reshape(-1))
    rand = _zero_windows(acts, j, rng.choice(counted, size=min(counted.size, 8 * max(n_rand, 1)), replace=False), n_rand, w, rng)
    nb = np.asarray(nb_starts, dtype=np.int64)
    return LatentContexts(
        int(j), activating(tr_idx, tr_q), activating(t_idx, t_q),
        Examples(acts.window_ids(rand, w), acts.window_acts(j, rand, w), np.full(rand.size, -1, np.int64)),
        Examples(acts.window_ids(nb, w), acts.window_acts(j, nb, w), np.asarray(nb_dist, dtype=np.int64)), n_active)


@dataclass
class ContextSet:
    """Contexts of many latents of one dictionary, savable as one safetensors file."""

    window: int
    latents: dict[int, LatentContexts] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    """Latents too rare to explain (fewer than ``min_examples`` activating windows)."""

    def save(self, path: Any, meta: dict | None = None) -> None:
        """Write every latent's windows to ``path`` (atomic safetensors; ``meta`` goes into its metadata)."""
        import json

        import torch

        from .._io import atomic_save_tensors

        ids, acts, dist, lat, kind, n_active = [], [], [], [], [], []
        for j, c in sorted(self.latents.items()):
            n_active.append([j, c.n_active])
            for k, ex in enumerate((c.train, c.test, c.random, c.neighbour)):
                ids.append(ex.ids)
                acts.append(ex.acts)
                dist.append(ex.distance)
                lat.append(np.full(len(ex), j, np.int64))
                kind.append(np.full(len(ex), k, np.int64))
        w = self.window

        def cat(parts, shape, dtype):
            return torch.from_numpy(np.concatenate(parts).astype(dtype)) if parts else torch.zeros(shape, dtype=getattr(torch, dtype))

        atomic_save_tensors(path, {"ids": cat(ids, (0, w), "int64"), "acts": cat(acts, (0, w), "float32"),
                                   "distance": cat(dist, (0,), "int64"), "latent": cat(lat, (0,), "int64"),
                                   "kind": cat(kind, (0,), "int64"),
                                   "n_active": torch.tensor(n_active, dtype=torch.int64).reshape(-1, 2),
                                   "skipped": torch.tensor(self.skipped, dtype=torch.int64)},
                            metadata={"meta": json.dumps(meta or {}, sort_keys=True), "window": str(w)})

    @classmethod
    def load(cls, path: Any) -> tuple["ContextSet", dict]:
        """Inverse of :meth:`save`: the set and the metadata it was saved with."""
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        w = int(meta.get("window", t["ids"].shape[1] if t["ids"].ndim == 2 else 0))
        out = cls(w, skipped=[int(x) for x in t["skipped"]])
        n_active = {int(a): int(b) for a, b in t["n_active"]}
        order = np.argsort(t["latent"], kind="stable")
        lat = t["latent"][order]
        bounds = np.flatnonzero(np.diff(lat)) + 1
        for grp in np.split(order, bounds) if order.size else []:
            j = int(t["latent"][grp[0]])
            parts = []
            for k in range(4):
                sel = grp[t["kind"][grp] == k]
                parts.append(Examples(t["ids"][sel], t["acts"][sel], t["distance"][sel]))
            out.latents[j] = LatentContexts(j, *parts, n_active.get(j, 0))
        for j, n in n_active.items():  # a latent whose windows are all empty still has its entry
            if j not in out.latents:
                e = Examples.empty(w)
                out.latents[j] = LatentContexts(j, e, e, e, e, n)
        return out, json.loads(meta.get("meta", "{}"))


def sample_contexts(acts: LatentActivations, latents: Iterable[int], cfg: ContextConfig,
                    neighbours: np.ndarray | None = None, progress_desc: str = "contexts") -> ContextSet:
    """Contexts of every latent in ``latents`` (see :func:`contexts_for_latent`); ``neighbours`` ``[n_latents, k]``."""
    from .._progress import progress

    out = ContextSet(min(cfg.window, acts.seq_len))
    for j in progress(list(latents), desc=progress_desc, unit="latent"):
        c = contexts_for_latent(acts, int(j), cfg, None if neighbours is None else neighbours[int(j)])
        if c is None:
            out.skipped.append(int(j))
        else:
            out.latents[int(j)] = c
    return out
