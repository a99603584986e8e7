"""``seeds``: several dictionaries on the same activations and how many latents they share (Paulo & Belrose)."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from ..hosts.names import hook_name, layer_at
from .common import train_stage
from .config import SeedsConfig
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
    return matching.seed_stability(coders, threshold, seeds=seeds, model=label, hook=h, kind=kind,
                                   k=getattr(coders[0].cfg, "k", None), curve_thresholds=CURVE_THRESHOLDS).to_dict()


def seeds_job(cfg: SeedsConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]) -> dict:
    """``universality seeds``: dictionaries of several seeds, kinds and sizes on one host; their overlap → report."""
    from ..activations import host_fingerprint
    from ..matching import SeedOverlapResult
    from ..results import RunResults
    from .common import cache_stage, environment, load_corpus_checked, load_hosts, model_entry, now
    from .compare import Side
    from .config import config_dict
    from .pipeline import corpus_entry, finish, start_run, streams

    label = cfg.name or cfg.model.rstrip("/").split("/")[-1]
    host = load_hosts({label: cfg.model}, device)[label]
    corpus = load_corpus_checked(cfg.corpus)
    run = start_run(out, "seeds", cfg, log)
    st = streams({label: host}, corpus, cfg.n_tokens, cfg.seq_len, 0)
    fp = host_fingerprint(host)
    side = Side(label, host, cfg.model, "model", st.streams[0], fp)
    h = hook_name(layer_at(host.n_layers, cfg.layer), cfg.hook)
    store = cache_stage(run, f"{label}-{cfg.hook}", host, [h], side.stream, fp)
    entries = [SeedOverlapResult.from_dict(
        seed_overlap_entry(run, label, host, fp, store, side.mask_rows, hook=cfg.hook, depth=cfg.layer, kind=kind, n_latents=n,
                           k=cfg.k, seeds=cfg.seeds, epochs=cfg.sae_epochs, threshold=cfg.threshold, device=device))
        for kind in cfg.kinds for n in cfg.n_latents]
    res = RunResults(f"Seed stability of dictionaries on {label}", now(), environment(device),
                     corpus_entry(corpus, int(side.stream.mask.sum()), cfg.corpus),
                     models=[model_entry(label, host, cfg.model, "model")], seed_overlap=entries, config=config_dict(cfg))
    return finish(run, res, log)
