"""The commands' pipelines: run directory in, results.json + report out."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from .._errors import UniversalityError
from .._io import atomic_write_json
from .common import cache_stage, environment, hook_name, layer_at, load_corpus_checked, load_hosts, model_entry, now
from .compare import Side, run_compare
from .config import CompareConfig, DemoConfig, SeedsConfig, config_dict
from .rundir import RunDir
from .seeds import seed_overlap_entry


def _corpus_entry(corpus: Any, n_tokens: int, source: str) -> dict:
    return {"name": getattr(corpus, "name", source), "source": source, "fingerprint": corpus.fingerprint, "n_tokens": int(n_tokens),
            "n_documents": len(getattr(corpus, "documents", []) or [])}


def _streams(hosts: dict[str, Any], corpus: Any, n_tokens: int, seq_len: int, seed: int):
    from ..data import StreamConfig, context_length, streams_for_hosts

    limits = [n for n in (context_length(h) for h in hosts.values()) if n is not None]
    seq_len = min([seq_len] + limits)
    cfg = StreamConfig.for_tokens(n_tokens, seq_len=seq_len, seed=seed)
    return streams_for_hosts(list(hosts.values()), corpus, cfg, align=len(hosts) == 2)


def _random_init_copy(run: RunDir, label: str, path: str, seed: int) -> str:
    """A randomly initialised copy of the checkpoint at ``path`` (same config and tokenizer), saved in the run directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = run.path / "stages" / f"random-init-{label}"

    def build():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
        model.save_pretrained(folder)
        try:
            AutoTokenizer.from_pretrained(path).save_pretrained(folder)
        except (OSError, ValueError):
            pass
        return {"folder": folder.name}

    run.stage(f"random-init-{label}", {"path": str(path), "seed": seed}, build, valid=lambda r: (folder / "config.json").is_file())
    return str(folder)


def finish(run: RunDir, results: dict, log: Callable[[str], None]) -> dict:
    """Write results.json and render the report in the run directory; returns the results."""
    from ..reports import write_report

    results["timings"] = dict(run.timings)
    from .. import _dist  # torchrun: rank 0 alone writes results.json and the report

    if not _dist.is_main():
        return results
    files = write_report(run.path, results)
    log(f"wrote {files.html}, {files.markdown} and {files.results}")
    return results


def compare_job(cfg: CompareConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None],
                title: str | None = None) -> dict:
    """``universality compare``: load, stream, cache, train, match, report. Hosts are loaded before anything is written."""
    labels = cfg.labels
    hosts = load_hosts(dict(zip(labels, cfg.models)), device)
    seed_hosts = load_hosts(cfg.seed_models, device) if cfg.seed_models else {}
    unknown = sorted((set(cfg.seed_models) | set(cfg.floor_models)) - set(labels))
    if unknown:
        raise UniversalityError(f"seed_models/floor_models name unknown model(s) {', '.join(unknown)}; models are {', '.join(labels)}")
    corpus = load_corpus_checked(cfg.corpus)
    run = RunDir(out, log)
    atomic_write_json(run.path / "config.json", {"command": "compare", **config_dict(cfg)})
    floor_paths = dict(cfg.floor_models)
    if cfg.floor:
        for label, path in zip(labels[1:], cfg.models[1:]):
            if label not in floor_paths:
                floor_paths[label] = _random_init_copy(run, label, path, cfg.seed + 1000)
    floor_hosts = load_hosts(floor_paths, device) if cfg.floor else {}
    return _compare_with(run, cfg, hosts, dict(zip(labels, cfg.models)), floor_hosts, floor_paths, seed_hosts, cfg.seed_models,
                         corpus, device, log, title or f"Feature universality: {' vs '.join(labels)}")


def _compare_with(run, cfg, hosts, paths, floor_hosts, floor_paths, seed_hosts, seed_paths, corpus, device, log, title,
                  extra: dict | None = None) -> dict:
    from ..activations import host_fingerprint

    st = _streams(hosts, corpus, cfg.n_tokens, cfg.seq_len, cfg.seed)
    by_label = dict(zip(hosts, st.streams))
    sides = [Side(n, h, paths[n], "model", by_label[n], host_fingerprint(h)) for n, h in hosts.items()]
    floors = {n: Side(f"{n}-random-init", h, floor_paths[n], "random-init floor", by_label[n], host_fingerprint(h))
              for n, h in floor_hosts.items()}
    seeds = {n: Side(f"{n}-model-seed", h, seed_paths[n], "model-seed skyline", by_label[n], host_fingerprint(h))
             for n, h in seed_hosts.items()}
    cmp = run_compare(run, cfg, sides, floors, seeds, st.alignment, device, log)
    n_tok = int(sides[0].stream.mask.sum())
    results = {"schema": "universality.results/1", "title": title, "created": now(), "environment": environment(device),
               "corpus": _corpus_entry(corpus, n_tok, cfg.corpus), **cmp, "seed_overlap": [], "induction": [], "write_lag": [],
               "missing": [], "config": config_dict(cfg)}
    if extra:
        results.update(extra)
    return finish(run, results, log)


def seeds_job(cfg: SeedsConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]) -> dict:
    """``universality seeds``: dictionaries of several seeds, kinds and sizes on one host; their overlap."""
    from ..activations import host_fingerprint

    label = cfg.name or cfg.model.rstrip("/").split("/")[-1]
    host = load_hosts({label: cfg.model}, device)[label]
    corpus = load_corpus_checked(cfg.corpus)
    run = RunDir(out, log)
    atomic_write_json(run.path / "config.json", {"command": "seeds", **config_dict(cfg)})
    st = _streams({label: host}, corpus, cfg.n_tokens, cfg.seq_len, 0)
    fp = host_fingerprint(host)
    side = Side(label, host, cfg.model, "model", st.streams[0], fp)
    h = hook_name(layer_at(host, cfg.layer), cfg.hook)
    store = cache_stage(run, f"{label}-{cfg.hook}", host, [h], side.stream, fp)
    entries = [seed_overlap_entry(run, label, host, fp, store, side.mask_rows, hook=cfg.hook, depth=cfg.layer, kind=kind,
                                  n_latents=n, k=cfg.k, seeds=cfg.seeds, epochs=cfg.sae_epochs, threshold=cfg.threshold,
                                  device=device)
               for kind in cfg.kinds for n in cfg.n_latents]
    results = {"schema": "universality.results/1", "title": f"Seed stability of dictionaries on {label}", "created": now(),
               "environment": environment(device), "corpus": _corpus_entry(corpus, int(side.stream.mask.sum()), cfg.corpus),
               "models": [model_entry(label, host, cfg.model, "model")], "pairs": [], "seed_overlap": entries,
               "induction": [], "write_lag": [], "missing": [], "config": config_dict(cfg)}
    return finish(run, results, log)


def circuits_job(kind: str, models: list[str], out: str | os.PathLike, device: torch.device, log: Callable[[str], None],
                 n_prompts: int = 16) -> dict:
    """``universality induction`` / ``off-by-one``: per-host induction localisation or write-lag profiles, then a report."""
    from ..activations import host_fingerprint
    from .circuits import induction_stage, write_lag_stage

    labels = [m.rstrip("/").split("/")[-1] for m in models]
    hosts = load_hosts(dict(zip(labels, models)), device)
    run = RunDir(out, log)
    atomic_write_json(run.path / "config.json", {"command": kind, "models": models, "n_prompts": n_prompts})
    ind, wl = [], []
    for label, host in hosts.items():
        fp = host_fingerprint(host)
        if kind == "induction":
            ind.append(induction_stage(run, label, host, fp, n_prompts=n_prompts))
        else:
            wl.append(write_lag_stage(run, label, host, fp, n_seqs=max(2, n_prompts // 2)))
    title = "Induction localisation" if kind == "induction" else "Off-by-One write-lag profiles"
    results = {"schema": "universality.results/1", "title": f"{title}: {', '.join(labels)}", "created": now(),
               "environment": environment(device), "corpus": {"name": "random token prompts", "source": "analysis tasks"},
               "models": [model_entry(n, h, p, "model") for (n, h), p in zip(hosts.items(), models)], "pairs": [],
               "seed_overlap": [], "induction": ind, "write_lag": wl, "missing": []}
    return finish(run, results, log)


DEMO_MODELS = ("transformer", "mamba", "rwkv")
"""Zoo members compared by the demo (their ``-untrained`` copies are the floors, ``-seed1`` the model-seed skylines)."""


def demo_job(cfg: DemoConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]) -> dict:
    """``universality demo``: zoo (built if absent) → Transformer vs Mamba vs RWKV, seed overlap, induction, write lag → report."""
    from .. import zoo
    from ..activations import host_fingerprint
    from .circuits import induction_stage, write_lag_stage

    preset = cfg.zoo_preset or ("test" if cfg.quick else "default")
    corpus = load_corpus_checked(cfg.corpus)
    run = RunDir(out, log)
    atomic_write_json(run.path / "config.json", {"command": "demo", **config_dict(cfg)})
    log(f"zoo '{preset}': building what is missing (cached afterwards)")
    members = [m.name for m in zoo.get_preset(preset).models]
    wanted = [m for m in members if m.split("-")[0] in DEMO_MODELS]
    paths = {k: str(v) for k, v in zoo.ensure_zoo(preset, cfg.zoo_home, only=wanted).items()}
    missing = []
    names = [n for n in DEMO_MODELS if n in paths]
    missing += [f"zoo member '{n}' (not in preset '{preset}')" for n in DEMO_MODELS if n not in paths]
    hosts = load_hosts({n: paths[n] for n in names}, device)
    floor_paths = {n: paths[f"{n}-untrained"] for n in names if f"{n}-untrained" in paths}
    seed_paths = {n: paths[f"{n}-seed1"] for n in names if f"{n}-seed1" in paths}
    ccfg = CompareConfig(models=[paths[n] for n in names], names=names, hook="resid_post",
                         n_tokens=cfg.n_tokens or (4096 if cfg.quick else 16384), seq_len=64,
                         n_latents=cfg.n_latents or (128 if cfg.quick else 512), k=8 if cfg.quick else 16,
                         sae_epochs=1 if cfg.quick else 4, n_boot=5 if cfg.quick else 20, corpus=cfg.corpus,
                         floor_models=floor_paths, seed_models=seed_paths)
    # seed stability on the Transformer's middle MLP output: TopK vs ReLU-L1
    t_host = hosts[names[0]]
    t_fp = host_fingerprint(t_host)
    from ..data import StreamConfig, context_length, make_stream

    seq_len = min(64, context_length(t_host) or 64)
    stream = make_stream(corpus, t_host.tokenizer, StreamConfig.for_tokens(ccfg.n_tokens, seq_len=seq_len), max_len=context_length(t_host))
    side = Side(names[0], t_host, paths[names[0]], "model", stream, t_fp)
    seeds = [0, 1] if cfg.quick else [0, 1, 2]
    hook = hook_name(layer_at(t_host, 0.5), "mlp_out")
    store = cache_stage(run, f"{names[0]}-mlp_out", t_host, [hook], stream, t_fp)
    seed_entries = [seed_overlap_entry(run, names[0], t_host, t_fp, store, side.mask_rows, hook="mlp_out", depth=0.5, kind=kind,
                                       n_latents=ccfg.n_latents, k=ccfg.k, seeds=seeds, epochs=ccfg.sae_epochs, threshold=0.7,
                                       device=device)
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
    extra = {"seed_overlap": seed_entries, "induction": induction, "write_lag": write_lag, "missing": missing,
             "zoo": {"preset": preset, "models": {k: {kk: v[kk] for kk in ("heldout_loss", "unigram_loss", "n_params")
                                                     if kk in v} for k, v in (zoo_info.get("models") or {}).items()}}}
    return _compare_with(run, ccfg, hosts, {n: paths[n] for n in names}, load_hosts(floor_paths, device), floor_paths,
                         load_hosts(seed_paths, device), seed_paths, corpus, device, log,
                         "Universality demo: tiny Transformer, Mamba and RWKV" + (" (quick)" if cfg.quick else ""), extra)
