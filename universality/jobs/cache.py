"""``universality cache``: hook activations of a model over a token stream, written as an activation store."""

from __future__ import annotations

import os
from typing import Callable

import torch

from .config import CacheConfig


def cache_job(cfg: CacheConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]):
    """Cache ``cfg.hooks`` of ``cfg.model`` over ``cfg.tokens`` tokens of ``cfg.corpus`` into the store folder ``out``.

    Returns the :class:`~universality.activations.ActivationStore` (it resumes by itself when interrupted).
    """
    from ..activations import cache_activations
    from ..data import StreamConfig, context_length, make_stream
    from ..hosts import load_host
    from .common import load_corpus_checked

    host = load_host(cfg.model, device=str(device))
    corpus = load_corpus_checked(cfg.corpus)
    stream = make_stream(corpus, host.tokenizer, StreamConfig.for_tokens(cfg.tokens, seq_len=cfg.seq_len),
                         max_len=context_length(host))
    store = cache_activations(host, cfg.hooks, stream, out)
    log(f"cached {store.n_rows} rows of {', '.join(cfg.hooks)} in {out}")
    return store
