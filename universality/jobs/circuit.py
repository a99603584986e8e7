"""``universality circuit``: per-block transcoders, one attribution graph per model, comparisons across models.

Stages (each cached in the run directory, see :mod:`.rundir`):

1. ``transcoders-<model>``: the model's site activations over the corpus stream, one TopK dictionary per
   block (skip transcoders ``mlp_in -> mlp_out`` for Transformers and RWKV, autoencoders on ``mixer_out``
   for Mamba), saved under the stage folder.
2. ``graph-<model>``: the attribution graph on the prompt (saved whole, plus circuit-tracer's JSON of the
   pruned graph in ``graphs/<model>.json`` and its SVG), summarised as a
   :class:`~universality.analysis.attribution.records.GraphSummary`.
3. ``circuit-compare-<a>-<b>``: for models that read the same tokens, MPPC partners between their
   dictionaries' latents and the share of each graph's influence carried by features whose partner is in
   the other graph.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch

from .._io import atomic_write_json, fingerprint
from .config import CircuitGraphConfig
from .rundir import RunDir

_TRAIN_BATCH = 1024
"""Tokens per transcoder training step."""
_MPPC_TOKENS = 8192
"""Stream tokens the cross-model MPPC is computed over."""


def _site_names(host: Any) -> tuple[list[str], list[str]]:
    from ..analysis.attribution import SITES

    site = SITES[host.arch]
    return ([f"blocks.{i}.{site.input_point}" for i in range(host.n_layers)],
            [f"blocks.{i}.{site.output_point}" for i in range(host.n_layers)])


def site_activations(host: Any, stream: Any, names: list[str], max_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """``name -> [n_tokens, d]`` activations of ``names`` over the counted positions of ``stream``."""
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    seen = 0
    with torch.no_grad():
        for start in range(0, stream.tokens.shape[0], 16):
            tokens, mask = stream.tokens[start:start + 16], stream.mask[start:start + 16]
            _, cache = host.run_with_cache(tokens.to(host.device), sorted(set(names)), return_logits=False)
            for n in out:
                out[n].append(cache[n][mask.to(cache[n].device)].float().cpu())
            seen += int(mask.sum())
            if max_tokens is not None and seen >= max_tokens:
                break
    return {n: torch.cat(v)[:max_tokens] for n, v in out.items()}


def transcoder_stage(run: RunDir, label: str, host: Any, fp: str, stream: Any, cfg: CircuitGraphConfig,
                     device: torch.device) -> tuple[list, str]:
    """Stage 1: one trained dictionary per block of ``host`` (loaded from the stage folder), and the stage's input fingerprint."""
    from .. import sae

    ins, outs = _site_names(host)
    stage = f"transcoders-{label}"
    inputs = {"host": fp, "stream": stream.fingerprint, "n_latents": cfg.n_latents, "k": cfg.k, "seed": cfg.seed,
              "steps": cfg.train_steps,
              "sites": [ins[0], outs[0]]}
    folder = run.path / "stages" / stage

    def build() -> dict:
        acts = site_activations(host, stream, ins + outs)
        fvu = []
        for i, (a, b) in enumerate(zip(ins, outs)):
            target = acts[b] if a != b else None
            coder = sae.fit(acts[a], kind="topk", n_latents=cfg.n_latents, k=cfg.k, seed=cfg.seed, target=target,
                            skip=target is not None, device=str(device), hook=a, target_hook=b, host=fp,
                            batch_size=_TRAIN_BATCH, n_tokens=cfg.train_steps * _TRAIN_BATCH)
            coder.save(run.folder(stage) / f"block{i}")
            fvu.append(float(getattr(coder, "metrics", None).fvu) if getattr(coder, "metrics", None) is not None else None)
        return {"blocks": host.n_layers, "fvu": fvu}

    entry = run.stage(stage, inputs, build, valid=lambda e: all((folder / f"block{i}").is_dir() for i in range(e["blocks"])))
    return [sae.load(folder / f"block{i}") for i in range(entry["blocks"])], fingerprint(inputs)


def circuit_prompt(host: Any, cfg: CircuitGraphConfig) -> tuple[torch.Tensor, Any, int | None]:
    """(prompt ids [t], target for :func:`attribution_graph`, position of the last token's earlier copy or None)."""
    from ..analysis.attribution import prompt_tokens
    from ..analysis.tasks import distinct_tokens

    if cfg.task == "induction":
        gen = torch.Generator().manual_seed(cfg.seed)
        half = distinct_tokens(1, cfg.half, host.vocab_size, gen, low=min(3, host.vocab_size - cfg.half))[0]
        prompt = torch.cat([half, half[:-1]])
        return prompt_tokens(host, prompt), (cfg.target if cfg.target is not None else [int(half[-1])]), cfg.half - 2
    return prompt_tokens(host, cfg.prompt), cfg.target, None


def graph_stage(run: RunDir, label: str, host: Any, fp: str, coders: list, coders_fp: str, cfg: CircuitGraphConfig):
    """Stage 2: the graph of ``host`` on the configured prompt → (:class:`GraphSummary` dict, :class:`Graph`, input fingerprint)."""
    from ..analysis.attribution import Graph, attribution_graph, induction_shape, render_svg

    prompt, target, source = circuit_prompt(host, cfg)
    stage = f"graph-{label}"
    folder = run.path / "stages" / stage
    inputs = {"host": fp, "transcoders": coders_fp, "prompt": prompt.tolist(),
              "target": target, "batch_size": cfg.batch_size, "max_feature_nodes": cfg.max_feature_nodes,
              "node_threshold": cfg.node_threshold, "edge_threshold": cfg.edge_threshold}

    def build() -> dict:
        t0 = time.perf_counter()
        g = attribution_graph(host, prompt, coders, target=target, batch_size=cfg.batch_size,
                              max_feature_nodes=cfg.max_feature_nodes or None, model_name=label)
        seconds = time.perf_counter() - t0
        g.save(run.folder(stage))
        doc = g.to_json(cfg.node_threshold, cfg.edge_threshold, slug=label)
        atomic_write_json(run.path / "graphs" / f"{label}.json", doc)
        kept = g.prune(cfg.node_threshold, cfg.edge_threshold)
        replacement, completeness = g.scores()
        induction = None
        if source is not None:
            with torch.no_grad():
                probs = torch.softmax(host.run_with_cache(prompt[None].to(host.device), [])[0][0, -1].float(), -1).cpu()
            answer = int(g.logit_tokens[0])
            induction = {**induction_shape(g, source, cfg.node_threshold, cfg.edge_threshold).to_dict(),
                         "answer_probability": float(probs[answer]), "answer_rank": int((probs > probs[answer]).sum())}
        return {"model": label, "arch": host.arch, "prompt": g.prompt_strings, "targets": g.settings["logit_strings"],
                "target_probabilities": [float(p) for p in g.logit_probabilities],
                "n_active_features": g.n_features, "n_kept_nodes": int(kept.node_mask.sum()),
                "n_kept_features": int(kept.node_mask[:g.n_features].sum()), "n_kept_edges": int(kept.edge_mask.sum()),
                "replacement_score": replacement, "completeness_score": completeness,
                "frozen_logit_error": g.frozen_logit_error, "seconds": round(seconds, 2),
                "top_path": [g.node(i).node_id for i in g.top_path()], "induction": induction,
                "graph_file": f"graphs/{label}.json", "svg": render_svg(g, cfg.node_threshold, cfg.edge_threshold)}

    entry = run.stage(stage, inputs, build, valid=lambda e: (folder / "graph.json").is_file())
    return entry, Graph.load(folder), fingerprint(inputs)


def compare_stage(run: RunDir, a: tuple, b: tuple, cfg: CircuitGraphConfig) -> dict:
    """Stage 3: MPPC partners between two models' dictionaries and the shared share of their graphs' influence."""
    from ..analysis.attribution import partner_share
    from ..matching import mppc

    (la, host_a, stream_a, coders_a, graph_a, fp_a), (lb, host_b, stream_b, coders_b, graph_b, fp_b) = a, b
    inputs = {"a": fp_a, "b": fp_b,
              "stream": stream_a.fingerprint, "tokens": _MPPC_TOKENS}

    def codes(host, stream, coders):
        ins, _ = _site_names(host)
        acts = site_activations(host, stream, ins, _MPPC_TOKENS)
        with torch.no_grad():
            return torch.cat([c.encode(acts[n]) for c, n in zip(coders, ins)], 1)

    def build() -> dict:
        r = mppc(codes(host_a, stream_a, coders_a), codes(host_b, stream_b, coders_b))
        share_ab = partner_share(graph_a, graph_b, r.a_to_b.argmax, coders_b[0].n_latents, cfg.node_threshold,
                                 cfg.edge_threshold, coders_a[0].n_latents)
        share_ba = partner_share(graph_b, graph_a, r.b_to_a.argmax, coders_a[0].n_latents, cfg.node_threshold,
                                 cfg.edge_threshold, coders_b[0].n_latents)
        return {"model_a": la, "model_b": lb, "share_a_in_b": share_ab, "share_b_in_a": share_ba}

    return run.stage(f"circuit-compare-{la}-{lb}", inputs, build)


def circuit_job(cfg: CircuitGraphConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]) -> dict:
    """``universality circuit``: the stages above for every model, then results.json and the report."""
    from ..analysis.attribution import settled_fingerprint
    from ..analysis.attribution.records import CircuitGraphsResult, GraphComparison, GraphSummary
    from ..results import RunResults
    from .common import environment, load_corpus_checked, load_hosts, model_entry, now
    from .config import config_dict
    from .pipeline import corpus_entry, finish, start_run, streams

    labels = _labels(cfg.models)
    hosts = load_hosts(dict(zip(labels, cfg.models)), device)
    corpus = load_corpus_checked(cfg.corpus)
    run = start_run(out, "circuit", cfg, log)
    st = streams(hosts, corpus, cfg.train_tokens, cfg.seq_len, cfg.seed)
    sides, summaries, notes = [], [], []
    for (label, host), stream in zip(hosts.items(), st.streams):
        fp = settled_fingerprint(host)
        coders, coders_fp = transcoder_stage(run, label, host, fp, stream, cfg, device)
        entry, graph, graph_fp = graph_stage(run, label, host, fp, coders, coders_fp, cfg)
        summaries.append(GraphSummary.from_dict(entry))
        sides.append((label, host, stream, coders, graph, graph_fp))
        ind = entry.get("induction")
        if ind is not None and ind["answer_rank"] > 0:
            notes.append(f"{label} ({host.arch}) does not do induction on this prompt (the answer has probability "
                         f"{ind['answer_probability']:.3f}, rank {ind['answer_rank'] + 1}); its graph is shown anyway.")
    comparisons = []
    for i in range(len(sides)):
        for j in range(i + 1, len(sides)):
            a, b = sides[i], sides[j]
            if not torch.equal(a[2].tokens, b[2].tokens):
                notes.append(f"{a[0]} and {b[0]} read different tokens (tokenizers differ); their graphs are not compared.")
                continue
            c = GraphComparison.from_dict(compare_stage(run, a, b, cfg))
            ia, ib = summaries[i].induction, summaries[j].induction
            if ia is not None and ib is not None:
                c.same_shape = bool(ia["chained"]) == bool(ib["chained"])
            comparisons.append(c)
    res = RunResults(f"Attribution graphs: {', '.join(labels)}", now(), environment(device),
                     corpus_entry(corpus, int(st.streams[0].mask.sum()), cfg.corpus),
                     models=[model_entry(n, h, p, "model") for (n, h), p in zip(hosts.items(), cfg.models)],
                     config=config_dict(cfg),
                     circuit_graphs=CircuitGraphsResult(cfg.task or "prompt", summaries, comparisons, notes))
    return finish(run, res, log)


def _labels(models: list[str]) -> list[str]:
    """One distinct label per model (its folder name; a counter when two share one)."""
    out: list[str] = []
    for m in models:
        base = m.rstrip("/").split("/")[-1] or "model"
        label, n = base, 1
        while label in out:
            n += 1
            label = f"{base}-{n}"
        out.append(label)
    return out
