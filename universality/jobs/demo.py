"""``universality demo``: the whole pipeline offline on the tiny zoo, Transformer vs Mamba vs RWKV."""

from __future__ import annotations

import os
from typing import Callable

import torch

from .._errors import UniversalityError
from .circuits import induction_stage, write_lag_stage
from ..hosts.names import hook_name, layer_at
from .common import cache_stage, load_corpus_checked, load_hosts
from .compare import Side
from .config import CompareConfig, DemoConfig
from .pipeline import compare_results, finish, start_run
from .seeds import seed_overlap_entry

DEMO_MODELS = ("transformer", "mamba", "rwkv")
"""Zoo members compared by the demo (their ``-untrained`` copies are the floors, ``-seed1`` the model-seed skylines)."""


def demo_compare_config(cfg: DemoConfig, paths: dict[str, str], names: list[str], floor_paths: dict[str, str],
                        seed_paths: dict[str, str]) -> CompareConfig:
    """The comparison the demo runs: its sizes shrink with ``quick``; ``n_tokens``/``n_latents`` override them."""
    return CompareConfig(models=[paths[n] for n in names], names=names, hook="resid_post",
                         n_tokens=cfg.n_tokens or (4096 if cfg.quick else 16384), seq_len=64,
                         n_latents=cfg.n_latents or (128 if cfg.quick else 512), k=8 if cfg.quick else 16,
                         sae_epochs=1 if cfg.quick else 4, n_boot=5 if cfg.quick else 20, corpus=cfg.corpus,
                         floor_models=floor_paths, seed_models=seed_paths, joint="crosscoder")


def demo_job(cfg: DemoConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]) -> dict:
    """``universality demo``: zoo (built if absent) → Transformer vs Mamba vs RWKV, seed overlap, induction, write lag → report."""
    from .. import zoo
    from ..activations import host_fingerprint
    from ..data import StreamConfig, context_length, make_stream
    from ..matching import SeedOverlapResult

    preset = cfg.zoo_preset or ("test" if cfg.quick else "default")
    corpus = load_corpus_checked(cfg.corpus)
    run = start_run(out, "demo", cfg, log)
    log(f"zoo '{preset}': building what is missing (cached afterwards)")
    members = [m.name for m in zoo.get_preset(preset).models]
    wanted = [m for m in members if m.split("-")[0] in DEMO_MODELS]
    paths = {k: str(v) for k, v in zoo.ensure_zoo(preset, cfg.zoo_home, only=wanted).items()}
    names = [n for n in DEMO_MODELS if n in paths]
    missing = [f"zoo member '{n}' (not in preset '{preset}')" for n in DEMO_MODELS if n not in paths]
    hosts = load_hosts({n: paths[n] for n in names}, device)
    floor_paths = {n: paths[f"{n}-untrained"] for n in names if f"{n}-untrained" in paths}
    seed_paths = {n: paths[f"{n}-seed1"] for n in names if f"{n}-seed1" in paths}
    ccfg = demo_compare_config(cfg, paths, names, floor_paths, seed_paths)

    # seed stability on the Transformer's middle MLP output: TopK vs ReLU-L1
    t_host = hosts[names[0]]
    t_fp = host_fingerprint(t_host)
    seq_len = min(64, context_length(t_host) or 64)
    stream = make_stream(corpus, t_host.tokenizer, StreamConfig.for_tokens(ccfg.n_tokens, seq_len=seq_len), max_len=context_length(t_host))
    side = Side(names[0], t_host, paths[names[0]], "model", stream, t_fp)
    seeds = [0, 1] if cfg.quick else [0, 1, 2]
    hook = hook_name(layer_at(t_host.n_layers, 0.5), "mlp_out")
    store = cache_stage(run, f"{names[0]}-mlp_out", t_host, [hook], stream, t_fp)
    seed_overlap = [SeedOverlapResult.from_dict(
        seed_overlap_entry(run, names[0], t_host, t_fp, store, side.mask_rows, hook="mlp_out", depth=0.5, kind=kind,
                           n_latents=ccfg.n_latents, k=ccfg.k, seeds=seeds, epochs=ccfg.sae_epochs, threshold=0.7, device=device))
        for kind in ("topk", "relu")]
    induction, write_lag = [], []
    for n, h in hosts.items():
        fp = host_fingerprint(h)
        induction.append(induction_stage(run, n, h, fp, n_prompts=8 if cfg.quick else 16))
        write_lag.append(write_lag_stage(run, n, h, fp, n_seqs=4 if cfg.quick else 8))
    zoo_info = {}
    try:
        zoo_info = zoo.load_zoo_results(preset, cfg.zoo_home)
    except UniversalityError:
        pass
    res = compare_results(run, ccfg, hosts, {n: paths[n] for n in names}, load_hosts(floor_paths, device), floor_paths,
                          load_hosts(seed_paths, device), seed_paths, corpus, device, log,
                          "Universality demo: tiny Transformer, Mamba and RWKV" + (" (quick)" if cfg.quick else ""))
    res.seed_overlap, res.induction, res.write_lag, res.missing = seed_overlap, induction, write_lag, missing
    res.zoo = {"preset": preset, "models": {k: {kk: v[kk] for kk in ("heldout_loss", "unigram_loss", "n_params") if kk in v}
                                            for k, v in (zoo_info.get("models") or {}).items()}}
    return finish(run, res, log)
