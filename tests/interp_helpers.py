"""Synthetic ground truth for the interp tests: a token stream with planted token features and random latents."""

from __future__ import annotations

import socket

import numpy as np
import scipy.sparse as sp

from universality.interp.contexts import LatentActivations
from universality.interp.tokens import TokenTable

PLANTED = {0: (5, 17, 42), 1: (3, 99), 2: (7,), 3: (60, 61, 62, 63)}
"""Latent → the token ids it fires on."""


def planted_stream(n_seq: int = 300, seq_len: int = 64, vocab: int = 200, n_random: int = 40, rate: float = 0.03,
                   seed: int = 0, extra: dict | None = None):
    """Tokens (Zipf-like), mask (position 0 is BOS, not counted) and codes ``[n_rows, n_latents]`` (CSC).

    Latents in :data:`PLANTED` (and ``extra``) fire (value 1 + noise) exactly where their tokens occur;
    the next ``n_random`` latents fire at random counted positions with probability ``rate``.
    """
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1) ** 0.8
    tokens = rng.choice(vocab, size=(n_seq, seq_len), p=p / p.sum()).astype(np.int64)
    tokens[:, 0] = 0
    mask = np.ones_like(tokens, dtype=bool)
    mask[:, 0] = False
    planted = {**PLANTED, **(extra or {})}
    n_pl = max(planted) + 1
    flat, fm = tokens.reshape(-1), mask.reshape(-1)
    rows, cols, vals = [], [], []
    for j, ids in planted.items():
        r = np.flatnonzero(np.isin(flat, ids) & fm)
        rows.append(r), cols.append(np.full(r.size, j)), vals.append(1.0 + rng.random(r.size))
    for j in range(n_pl, n_pl + n_random):
        r = np.flatnonzero((rng.random(flat.size) < rate) & fm)
        rows.append(r), cols.append(np.full(r.size, j)), vals.append(rng.random(r.size) + 0.1)
    codes = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(flat.size, n_pl + n_random), dtype=np.float32)
    return tokens, mask, codes


def table(vocab: int = 200) -> TokenTable:
    """Token texts with leading spaces on odd ids, a quote and markup in a few."""
    texts = [(" " if i % 2 else "") + f"t{i}" for i in range(vocab)]
    texts[42] = ' "q<b>'
    return TokenTable(texts)


def planted_activations(**kw) -> LatentActivations:
    t, m, c = planted_stream(**kw)
    return LatentActivations(c, t, m)


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
