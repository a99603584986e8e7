"""``seeds``: several dictionaries on the same activations and how many latents they share (Paulo & Belrose)."""

from __future__ import annotations

from typing import Any

import torch

from .common import hook_name, layer_at, train_stage
from .rundir import RunDir

CURVE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def seed_overlap_entry(run: RunDir, label: str, host: Any, host_fp: str, store: Any, rows: torch.Tensor, *, hook: str,
                       depth: float, kind: str, n_latents: int, k: int, seeds: list[int], epochs: int, threshold: float,
                       device: torch.device) -> dict:
    """results.json ``seed_overlap`` entry: mean shared fraction over seed pairs, N-seed histogram, threshold curve."""
    from .. import matching

    h = hook_name(layer_at(host, depth), hook)
    coders = [train_stage(run, store, h, rows, tag=f"{label}-{h}-{kind}-n{n_latents}-s{s}", host_fp=host_fp, kind=kind,
                          n_latents=n_latents, k=k, seed=s, epochs=epochs, device=device) for s in seeds]
    coders = [c.cpu() for c in coders]
    return matching.seed_stability(coders, threshold, seeds=seeds, model=label, hook=h, kind=kind,
                                   k=k if kind in ("topk", "batchtopk") else None, curve_thresholds=CURVE_THRESHOLDS).to_dict()
