"""``seeds``: several dictionaries on the same activations and how many latents they share (Paulo & Belrose)."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch

from ..hosts.names import hook_name, layer_at
from .common import train_stage
from .rundir import RunDir

CURVE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def seed_overlap_entry(run: RunDir, label: str, host: Any, host_fp: str, store: Any, rows: torch.Tensor, *, hook: str,
                       depth: float, kind: str, n_latents: int, k: int, seeds: list[int], epochs: int, threshold: float,
                       device: torch.device) -> dict:
    """results.json ``seed_overlap`` entry: mean shared fraction over seed pairs, N-seed histogram, threshold curve."""
    from .. import matching

    h = hook_name(layer_at(host.n_layers, depth), hook)
    coders = [train_stage(run, store, h, rows, tag=f"{label}-{h}-{kind}-n{n_latents}-s{s}", host_fp=host_fp, kind=kind,
                          n_latents=n_latents, k=k, seed=s, epochs=epochs, device=device) for s in seeds]
    coders = [c.cpu() for c in coders]
    overlaps = [matching.seed_overlap(a, b, threshold) for a, b in combinations(coders, 2)]
    fracs = np.array([o.shared_fraction for o in overlaps])
    presence = matching.seed_presence(coders, threshold)
    first = overlaps[0]
    curve = [float(((first.encoder_cos > t) & (first.decoder_cos > t)).double().mean()) for t in CURVE_THRESHOLDS]
    agree = [o.assignments_agree for o in overlaps if o.assignments_agree == o.assignments_agree]
    return {"model": label, "hook": h, "kind": kind, "n_latents": n_latents, "k": getattr(coders[0].cfg, "k", None),
            "seeds": list(seeds), "threshold": threshold, "shared_fraction": float(fracs.mean()),
            "shared_fraction_std": float(fracs.std(ddof=1)) if fracs.size > 1 else 0.0,
            "agreement": float(np.mean(agree)) if agree else None,
            "n_seed_hist": [int(x) for x in presence.histogram[1:].tolist()],
            "curve": {"thresholds": list(CURVE_THRESHOLDS), "shared_fraction": curve}}
