"""``universality train``: one dictionary on a cached activation store."""

from __future__ import annotations

import os
from typing import Callable

import torch

from .config import TrainConfig


def train_job(cfg: TrainConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]):
    """Train a ``cfg.kind`` dictionary on the store's (masked) rows of ``cfg.hook`` and save it in ``out``; returns it."""
    from .. import sae
    from ..activations import ActivationStore

    store = ActivationStore(cfg.store)
    x = store.read(cfg.hook, masked=True)
    coder = sae.fit(x, kind=cfg.kind, n_latents=cfg.n_latents, k=cfg.k, seed=cfg.seed, device=str(device), hook=cfg.hook,
                    n_tokens=cfg.n_tokens, batch_size=cfg.batch_size)
    coder.save(out)
    log(f"saved the dictionary in {out}")
    return coder
