"""``universality demo``: the whole pipeline offline on the tiny zoo, Transformer vs Mamba vs RWKV."""

from __future__ import annotations

import os
from typing import Callable

import torch

from .._errors import UniversalityError
from .circuits import induction_match_stage, induction_stage, paper_findings_stage, write_lag_stage
from ..hosts.names import hook_name, layer_at
from .common import cache_stage, load_corpus_checked, load_hosts
from .compare import Side
from .config import CompareConfig, DemoConfig
from .compare import compare_results
from .pipeline import finish, start_run
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


CIRCUITS_KEYS = ("heldout_loss", "unigram_loss", "n_params", "induction_score", "induction_accuracy")
"""What the report keeps of each circuits-preset member's ``zoo.json`` record."""


def circuit_findings(run, cfg: DemoConfig, preset: str, hosts: dict, induction: list, device: torch.device,
                     log: Callable[[str], None], missing: list[str], corpus=None) -> tuple[list, list, dict, list]:
    """The paper's findings per architecture, on the members of the circuits preset (built if absent).

    Returns the :class:`~universality.analysis.PaperFindings` list, the induction summaries of the circuits
    members (labelled ``<member>.<preset>``; empty when the preset is the demo's own), their zoo records and
    the induction rows of the depth map between them (:class:`~universality.analysis.InductionMatch`; empty
    without ``corpus``).
    """
    from .. import zoo
    from ..activations import host_fingerprint

    cpreset = cfg.circuits_preset or (preset if cfg.quick else "circuits")
    n_prompts = 8 if cfg.quick else 16
    if cpreset == preset:
        findings = [paper_findings_stage(run, n, h, host_fingerprint(h), s, n_prompts=n_prompts)
                    for (n, h), s in zip(hosts.items(), induction)]
        return findings, [], {}, _induction_match(run, hosts, findings, corpus, cfg.quick)
    known = {m.name for m in zoo.get_preset(cpreset).models}
    names = [n for n in DEMO_MODELS if n in known]
    missing += [f"zoo member '{n}' (not in circuits preset '{cpreset}')" for n in DEMO_MODELS if n not in known]
    log(f"zoo '{cpreset}' (models that do induction, for the circuit findings): building what is missing")
    paths = zoo.ensure_zoo(cpreset, cfg.zoo_home, only=names)
    c_hosts = load_hosts({f"{n}.{cpreset}": str(paths[n]) for n in names}, device)
    findings, summaries = [], []
    for label, h in c_hosts.items():
        fp = host_fingerprint(h)
        summaries.append(induction_stage(run, label, h, fp, n_prompts=n_prompts))
        findings.append(paper_findings_stage(run, label, h, fp, summaries[-1], n_prompts=n_prompts))
    records = {}
    try:
        records = zoo.load_zoo_results(cpreset, cfg.zoo_home).get("models") or {}
    except UniversalityError:
        pass
    c_zoo = {"preset": cpreset, "models": {k: {kk: v[kk] for kk in CIRCUITS_KEYS if kk in v} for k, v in records.items()}}
    return findings, summaries, c_zoo, _induction_match(run, c_hosts, findings, corpus, cfg.quick)


def _induction_match(run, hosts: dict, findings: list, corpus, quick: bool) -> list:
    """The induction-match stage on ``hosts`` when they share one vocabulary (else nothing)."""
    from ..activations import host_fingerprint

    if corpus is None or len(hosts) < 2 or len({int(h.vocab_size) for h in hosts.values()}) != 1:
        return []
    return induction_match_stage(run, hosts, {n: host_fingerprint(h) for n, h in hosts.items()}, findings, corpus, quick)


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
    evaluation = demo_evaluation(run, cfg, corpus, names[0], t_host, t_fp, hook, ccfg, stream.tokens.shape[1])
    induction, write_lag = [], []
    for n, h in hosts.items():
        fp = host_fingerprint(h)
        induction.append(induction_stage(run, n, h, fp, n_prompts=8 if cfg.quick else 16))
        write_lag.append(write_lag_stage(run, n, h, fp, n_seqs=4 if cfg.quick else 8))
    findings, c_induction, c_zoo, induction_match = circuit_findings(run, cfg, preset, hosts, induction, device, log, missing, corpus)
    induction += c_induction
    from .steer import demo_lens_steer

    lens_steer = demo_lens_steer(run, hosts, corpus, cfg.quick, missing)
    zoo_info = {}
    try:
        zoo_info = zoo.load_zoo_results(preset, cfg.zoo_home)
    except UniversalityError:
        pass
    res = compare_results(run, ccfg, hosts, {n: paths[n] for n in names}, load_hosts(floor_paths, device), floor_paths,
                          load_hosts(seed_paths, device), seed_paths, corpus, device, log,
                          "Universality demo: tiny Transformer, Mamba and RWKV" + (" (quick)" if cfg.quick else ""))
    res.seed_overlap, res.induction, res.write_lag, res.missing = seed_overlap, induction, write_lag, missing
    res.paper_findings = findings
    res.induction_match = induction_match
    res.evaluations = [evaluation]
    res.lens_steer = lens_steer
    res.zoo = {"preset": preset, "models": {k: {kk: v[kk] for kk in ("heldout_loss", "unigram_loss", "n_params") if kk in v}
                                            for k, v in (zoo_info.get("models") or {}).items()}}
    if c_zoo:
        res.zoo["circuits"] = c_zoo
    if cfg.explain:  # offline token-statistics explanations of the compared dictionaries and the feature browser
        from .config import ExplainConfig
        from .explain import explain_results

        res.explanations = explain_results(run, res.to_dict(), ExplainConfig(target=str(run.path)), device, log)
    return finish(run, res, log)


def demo_evaluation(run, cfg: DemoConfig, corpus, label: str, host, host_fp: str, hook: str, ccfg: CompareConfig, seq_len: int):
    """SAEBench metrics and sparse probing of the seed-0 TopK dictionary of the seed-stability stage (issue 19)."""
    from .. import sae
    from .evaluate import eval_stage, eval_windows

    folder = run.path / "stages" / f"sae-{label}-{hook}-topk-n{ccfg.n_latents}-s0"
    coder = sae.load(folder, host=host)
    tokens, labels, classes, _ = eval_windows(host, corpus, 16 if cfg.quick else 32, seq_len, probe=True)
    return eval_stage(run, f"{label}-{hook}-topk", coder, host, host_fp, tokens, labels, classes, batch_size=16)
