"""``universality compare``: features of two or more hosts on the same tokens — MPPC both ways, depth grid, floor,
skylines, families.

Every heavy step is a call into the library (``data``, ``activations``, ``sae``, ``matching``) wrapped in a cached
stage of the run directory. Activations and codes stream from disk chunk by chunk; each MPPC between two
dictionaries is computed once and reused by the pair, its grid cell and the families.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import combinations
import os
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch

from .. import _dist
from .._errors import UniversalityError
from ..data import MultiAlignment
from ..hosts.names import hook_name, layer_at
from ..matching.mppc import mppc_reduced
from ..matching.stats import summarize_values
from ..results import RunResults
from .common import cache_stage, environment, load_corpus_checked, load_hosts, model_entry, now, train_stage
from .compare_results import FamiliesResult, GridResult, PairResult
from .config import CompareConfig, config_dict
from .pipeline import corpus_entry, finish, random_init_copy, start_run, streams
from .rundir import RunDir


class Side:
    """One host as seen by the comparison: its store, the rows that count, and its dictionaries' codes by layer."""

    def __init__(self, label: str, host: Any, path: str, role: str, stream: Any, host_fp: str):
        self.label, self.host, self.path, self.role, self.stream, self.host_fp = label, host, path, role, stream, host_fp
        self.store = None
        self.codes: dict[Any, Any] = {}
        """Layer (or ``(layer, seed)``) → :class:`~universality.activations.CodeStore` of that dictionary's sparse codes."""

    @property
    def mask_rows(self) -> torch.Tensor:
        """Rows of the store that count in statistics (BOS/EOS/pad left out)."""
        return self.stream.mask.reshape(-1).nonzero().squeeze(1)


def mppc_summaries(ca: Any, cb: Any, n_boot: int, seed: int, result: Any = None) -> tuple[dict, dict, Any]:
    """MPPC of codes ``ca`` ``[n, n_a]`` and ``cb`` ``[n, n_b]`` (tensors or scipy CSR): results.json summaries both ways and the raw result.

    ``result``, when given, is the already computed :class:`~universality.matching.MPPCResult` of these codes (not
    recomputed). The interval of each mean is a bootstrap over tokens when ``n_boot`` > 0: the bias-bounded interval
    of :func:`universality.matching.bias_bounded_interval`, which allows for MPPC's upward bias on finite tokens
    (so it reaches further below the estimate than above it).
    """
    from .. import matching

    r = result if result is not None else matching.mppc(ca, cb)
    out = []
    for d in ("a_to_b", "b_to_a"):
        vals = getattr(r, d).max_r.numpy()
        if not np.isfinite(vals).any():
            raise UniversalityError("every feature of a dictionary was dead on these tokens; use more tokens or fewer latents")
        out.append(summarize_values(vals, seed=seed))
    if n_boot:
        iv = matching.bootstrap_mppc(ca, cb, n_boot=n_boot, seed=seed, point=r)
        for s, d in zip(out, ("a_to_b", "b_to_a")):
            s["ci"] = [iv[f"{d}.mean"].low, iv[f"{d}.mean"].high]
            s["ci_method"] = "bias-bounded bootstrap over tokens"
    return out[0], out[1], r


def _token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    if tokenizer is None:
        return [f"<{i}>" for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def contexts(side: Side, rows: torch.Tensor, codes: sp.csc_matrix, feature: int, n: int = 2, window: int = 10) -> list[dict]:
    """The ``n`` top-activating contexts of ``feature``: token texts up to and including the active token.

    ``codes`` are the CSC codes ``[len(rows), n_latents]`` of the stream rows ``rows``; ties go to the earlier row.
    """
    lo, hi = codes.indptr[feature], codes.indptr[feature + 1]
    where, vals = codes.indices[lo:hi], codes.data[lo:hi]
    top = np.argsort(-vals, kind="stable")[:n]
    seq_len = side.stream.seq_len
    out = []
    for t in top.tolist():
        if vals[t] <= 0:
            continue
        row = int(rows[int(where[t])])
        s, pos = divmod(row, seq_len)
        start = max(0, pos - window + 1)
        ids = side.stream.tokens[s, start:pos + 1].tolist()
        out.append({"tokens": _token_texts(side.host.tokenizer, ids), "target": pos - start, "activation": float(vals[t])})
    return out


def top_matches(a: Side, b: Side, rows_a, rows_b, ca: sp.spmatrix, cb: sp.spmatrix, result, n: int) -> list[dict]:
    """The ``n`` features of A with the highest MPPC (active on ≥ 5 tokens) and their partners' contexts.

    ``ca`` ``[len(rows_a), n_a]`` and ``cb`` ``[len(rows_b), n_b]`` are sparse codes of the aligned rows.
    """
    r = result.a_to_b.max_r.clone()
    ca = sp.csr_matrix(ca)
    active = torch.from_numpy(np.bincount(ca.indices[ca.data > 0], minlength=ca.shape[1]))
    ca, cb = ca.tocsc(), sp.csc_matrix(cb)
    r[~torch.isfinite(r) | (active < 5)] = -2
    order = torch.argsort(r, descending=True)[:n]
    out = []
    for i in order.tolist():
        if r[i] <= -1:
            break
        j = int(result.a_to_b.argmax[i])
        out.append({"a_feature": i, "b_feature": j, "r": float(r[i]),
                    "contexts": {"a": contexts(a, rows_a, ca, i), "b": contexts(b, rows_b, cb, j)}})
    return out


def rows_between(a: Side, b: Side, alignment: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Store rows of A and of B that see the same text: shared masked rows, or the alignment's index maps."""
    if alignment is None or a.stream is b.stream:
        rows = a.mask_rows
        return rows, rows
    if isinstance(alignment, MultiAlignment):  # three or more tokenizers: the token ends every one of them shares
        return alignment.rows_for(a.stream), alignment.rows_for(b.stream)
    return alignment.rows_a, alignment.rows_b


class Dictionaries:
    """The dictionaries of one ``compare`` run, their sparse codes on disk and every MPPC between them, each computed once.

    A dictionary is ``(side, layer, seed)``: trained from the side's activation store, encoded into a
    :class:`~universality.activations.CodeStore` (both cached stages of the run directory). MPPC results are kept
    per pair of dictionaries and row set, so the middle-layer MPPC serves the pair, its grid cell and the families.
    """

    _KEEP = 4  # code matrices held in memory (tokens × k non-zeros each)

    def __init__(self, run: RunDir, cfg: CompareConfig, device: torch.device):
        self.run, self.cfg, self.device = run, cfg, device
        self._mppc: dict[tuple, Any] = {}
        self._matrices: OrderedDict[tuple, sp.csr_matrix] = OrderedDict()

    def key(self, side: Side, layer: int, seed: int | None = None) -> dict:
        """Everything a dictionary's codes depend on: host weights, token stream, hook and training settings."""
        cfg = self.cfg
        return {"host": side.host_fp, "stream": side.stream.fingerprint, "hook": hook_name(layer, cfg.hook), "kind": cfg.kind,
                "n_latents": cfg.n_latents, "k": cfg.k, "seed": cfg.seed if seed is None else seed, "epochs": cfg.sae_epochs}

    def codes(self, side: Side, layer: int, seed: int | None = None) -> Any:
        """The :class:`~universality.activations.CodeStore` of ``side``'s dictionary at ``layer`` (trained and encoded once)."""
        from ..activations.codes import encode_store

        cfg = self.cfg
        seed = cfg.seed if seed is None else seed
        slot = layer if seed == cfg.seed else (layer, seed)
        if slot not in side.codes:
            h = hook_name(layer, cfg.hook)
            tag = f"{side.label}-{h}-{cfg.kind}-s{seed}"
            coder = train_stage(self.run, side.store, h, side.mask_rows, tag=tag, host_fp=side.host_fp, kind=cfg.kind,
                                n_latents=cfg.n_latents, k=cfg.k, seed=seed, epochs=cfg.sae_epochs, device=self.device)
            folder = self.run.path / "stages" / f"codes-{tag}"
            job = self.key(side, layer, seed)
            self.run.stage(f"codes-{tag}", job, lambda: encode_store(coder, side.store, h, folder, job=job).manifest["n_rows"],
                           valid=lambda r: (folder / "manifest.json").is_file())
            side.codes[slot] = encode_store(coder, side.store, h, folder, job=job)  # reopens the complete store
        return side.codes[slot]

    def matrix(self, side: Side, layer: int, rows: torch.Tensor, rows_tag: str, seed: int | None = None) -> sp.csr_matrix:
        """CSR codes ``[len(rows), n_latents]`` of stream rows ``rows`` (``rows_tag`` names that row set)."""
        k = (side.label, layer, seed, rows_tag)
        if k in self._matrices:
            self._matrices.move_to_end(k)
            return self._matrices[k]
        m = self.codes(side, layer, seed).gather(rows)
        self._matrices[k] = m
        while len(self._matrices) > self._KEEP:
            self._matrices.popitem(last=False)
        return m

    def mppc(self, a: Side, la: int, rows_a: torch.Tensor, b: Side, lb: int, rows_b: torch.Tensor, rows_tag: str,
             seed_a: int | None = None, seed_b: int | None = None) -> Any:
        """The :class:`~universality.matching.MPPCResult` of two dictionaries on aligned rows, computed at most once."""
        from .. import matching

        k = (a.label, la, seed_a, b.label, lb, seed_b, rows_tag)
        if k not in self._mppc:
            if _dist.active():  # torchrun: each process sums its token shard; float64 sums reduced across processes
                lo, hi = _dist.shard_range(int(rows_a.numel()))
                self._mppc[k] = mppc_reduced(self.codes(a, la, seed_a).gather(rows_a[lo:hi]),
                                             self.codes(b, lb, seed_b).gather(rows_b[lo:hi]))
            else:
                self._mppc[k] = matching.mppc(self.matrix(a, la, rows_a, rows_tag + ":a", seed_a),
                                              self.matrix(b, lb, rows_b, rows_tag + ":b", seed_b))
        return self._mppc[k]


def _rows_tag(a: Side, b: Side, alignment: Any) -> str:
    """Name of the row set :func:`rows_between` gives for ``a`` and ``b``."""
    return "mask" if alignment is None or a.stream is b.stream else f"align:{a.label}|{b.label}"


def run_compare(run: RunDir, cfg: CompareConfig, sides: list[Side], floors: dict[str, Side], seeds: dict[str, Side],
                alignment: Any, device: torch.device, log: Callable[[str], None]) -> dict:
    """Dictionaries, MPPC per pair with floor and skylines, the layer grid and N-way families → results sections.

    ``sides`` are the compared hosts; ``floors`` maps a label to its random-init stand-in; ``seeds`` maps a label
    to another training seed of it. Once every activation store is cached, the hosts' weights are released
    (:meth:`~universality.hosts.Host.release_weights`): a host cannot run forward passes after this call. Returns ``{"models", "pairs", "families", "dictionaries"}`` for results.json.
    """
    hook = cfg.hook
    dicts = Dictionaries(run, cfg, device)

    def layers_of(side: Side) -> list[int]:
        main = layer_at(side.host.n_layers, 0.5)
        if cfg.layers is None:
            ls = set(range(side.host.n_layers))
        else:
            ls = {layer_at(side.host.n_layers, d) for d in cfg.layers}
        return sorted(ls | {main})

    all_sides = sides + list(floors.values()) + list(seeds.values())
    for side in all_sides:
        layers = layers_of(side) if side in sides else [layer_at(side.host.n_layers, 0.5)]
        hooks = [hook_name(layer, hook) for layer in layers]
        side.store = cache_stage(run, side.label, side.host, hooks, side.stream, side.host_fp)
    for side in all_sides:  # past the forward passes every later stage reads the stores: the models' memory is freed
        side.host.release_weights()

    pairs = []
    for a, b in combinations(sides, 2):
        la, lb = layer_at(a.host.n_layers, 0.5), layer_at(b.host.n_layers, 0.5)
        log(f"compare {a.label} × {b.label}: layers {la} and {lb}")
        grid_a, grid_b = layers_of(a), layers_of(b)
        refs_in = {"floor": dicts.key(floors[b.label], layer_at(floors[b.label].host.n_layers, 0.5)) if b.label in floors else None,
                   "sae_seed": dicts.key(a, la, cfg.seed + 1) if cfg.sae_seed_skyline else None,
                   "model_seed": dicts.key(seeds[a.label], layer_at(seeds[a.label].host.n_layers, 0.5)) if a.label in seeds else None}
        inputs = {"a": dicts.key(a, la), "b": dicts.key(b, lb), "references": refs_in,
                  "grid": [[dicts.key(a, i) for i in grid_a], [dicts.key(b, j) for j in grid_b]],
                  "cfg": {k: getattr(cfg, k) for k in ("n_boot", "ref_boot", "seed", "top_matches")}}
        pairs.append(run.stage(f"pair-{a.label}-{b.label}", inputs,
                               lambda a=a, b=b: _pair(dicts, cfg, a, b, floors, seeds, alignment, grid_a, grid_b).to_dict()))

    families = None
    if len(sides) >= 3:
        mids = {s.label: layer_at(s.host.n_layers, 0.5) for s in sides}
        families = run.stage("families", {"dictionaries": [dicts.key(s, mids[s.label]) for s in sides],
                                          "threshold": cfg.family_threshold},
                             lambda: _families(dicts, cfg, sides, alignment).to_dict())

    joint = None
    if cfg.joint:
        from .joint_stage import joint_stage

        joint = joint_stage(run, cfg, sides, alignment, dicts, device, log, contexts=contexts, rows_tag=_rows_tag)
    models = [model_entry(s.label, s.host, s.path, s.role, fingerprint=s.host_fp) for s in all_sides]
    return {"models": models, "pairs": pairs, "families": families, "joint": joint,
            "dictionaries": {"hook": hook, "kind": cfg.kind, "n_latents": cfg.n_latents, "k": cfg.k, "epochs": cfg.sae_epochs}}


def _pair(dicts: Dictionaries, cfg: CompareConfig, a: Side, b: Side, floors: dict[str, Side], seeds: dict[str, Side],
          alignment: Any, grid_a: list[int], grid_b: list[int]) -> PairResult:
    """The pair's MPPC both ways with bootstrap intervals, its reference lines, grid and top matches."""
    rows_a, rows_b = rows_between(a, b, alignment)
    tag = _rows_tag(a, b, alignment)
    la, lb = layer_at(a.host.n_layers, 0.5), layer_at(b.host.n_layers, 0.5)
    ca, cb = dicts.matrix(a, la, rows_a, tag + ":a"), dicts.matrix(b, lb, rows_b, tag + ":b")
    res = dicts.mppc(a, la, rows_a, b, lb, rows_b, tag)
    s_ab, s_ba, _ = mppc_summaries(ca, cb, cfg.n_boot, cfg.seed, result=res)
    refs = {}
    if b.label in floors:
        fl = floors[b.label]
        lf = layer_at(fl.host.n_layers, 0.5)
        refs["random-init floor"] = mppc_summaries(ca, dicts.matrix(fl, lf, rows_b, tag + ":b"), cfg.ref_boot, cfg.seed,
                                                   result=dicts.mppc(a, la, rows_a, fl, lf, rows_b, tag))[0]
    ra = a.mask_rows
    if cfg.sae_seed_skyline:
        s2 = cfg.seed + 1
        refs["SAE-seed skyline"] = mppc_summaries(dicts.matrix(a, la, ra, "mask"), dicts.matrix(a, la, ra, "mask", s2),
                                                  cfg.ref_boot, cfg.seed, result=dicts.mppc(a, la, ra, a, la, ra, "mask", seed_b=s2))[0]
    if a.label in seeds:
        sd = seeds[a.label]
        ls = layer_at(sd.host.n_layers, 0.5)
        refs["model-seed skyline"] = mppc_summaries(dicts.matrix(a, la, ra, "mask"), dicts.matrix(sd, ls, ra, "mask"),
                                                    cfg.ref_boot, cfg.seed, result=dicts.mppc(a, la, ra, sd, ls, ra, "mask"))[0]
    values = [[float(dicts.mppc(a, i, rows_a, b, j, rows_b, tag).summary("a_to_b").mean) for j in grid_b] for i in grid_a]
    values = [[v if np.isfinite(v) else 0.0 for v in row] for row in values]
    ca, cb = dicts.matrix(a, la, rows_a, tag + ":a"), dicts.matrix(b, lb, rows_b, tag + ":b")
    return PairResult(a.label, b.label, la, lb, cfg.hook, s_ab, s_ba, refs, GridResult(grid_a, grid_b, values),
                      top_matches(a, b, rows_a, rows_b, ca, cb, res, cfg.top_matches))


def _families(dicts: Dictionaries, cfg: CompareConfig, sides: list[Side], alignment: Any) -> FamiliesResult:
    """N-way families from the middle-layer MPPC of every pair (the pairs' own results, not recomputed)."""
    from .. import matching

    results = {}
    for a, b in combinations(sides, 2):
        rows_a, rows_b = rows_between(a, b, alignment)
        results[(a.label, b.label)] = dicts.mppc(a, layer_at(a.host.n_layers, 0.5), rows_a, b, layer_at(b.host.n_layers, 0.5), rows_b,
                                                 _rows_tag(a, b, alignment))
    f = matching.families_from_mppc({s.label: cfg.n_latents for s in sides}, results, threshold=cfg.family_threshold)
    by_size = {str(m): int(f.present_in[m]) for m in range(1, len(sides) + 1)}
    examples = []
    for fid in [int(i) for i in torch.nonzero(f.family_hosts == len(sides)).squeeze(1)[:5]]:
        members = {}
        for s in sides:
            idx = torch.nonzero(f.labels[s.label] == fid).squeeze(1)
            members[s.label] = " ".join(f"#{int(i)}" for i in idx[:3])
        examples.append({"members": members})
    return FamiliesResult([s.label for s in sides], cfg.family_threshold, int(f.family_hosts.numel()), by_size, examples)


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
    run = start_run(out, "compare", cfg, log)
    floor_paths = dict(cfg.floor_models)
    if cfg.floor:
        for label, path in zip(labels[1:], cfg.models[1:]):
            if label not in floor_paths:
                floor_paths[label] = random_init_copy(run, label, path, cfg.seed + 1000)
    floor_hosts = load_hosts(floor_paths, device) if cfg.floor else {}
    res = compare_results(run, cfg, hosts, dict(zip(labels, cfg.models)), floor_hosts, floor_paths, seed_hosts, cfg.seed_models,
                          corpus, device, log, title or f"Feature universality: {' vs '.join(labels)}")
    return finish(run, res, log)


def compare_results(run: RunDir, cfg: CompareConfig, hosts: dict, paths: dict, floor_hosts: dict, floor_paths: dict,
                    seed_hosts: dict, seed_paths: dict, corpus: Any, device: torch.device, log: Callable[[str], None],
                    title: str) -> RunResults:
    """The comparison of ``hosts`` (with their floors and model-seed skylines) as :class:`RunResults`."""
    from ..activations import host_fingerprint

    st = streams(hosts, corpus, cfg.n_tokens, cfg.seq_len, cfg.seed)
    by_label = dict(zip(hosts, st.streams))
    sides = [Side(n, h, paths[n], "model", by_label[n], host_fingerprint(h)) for n, h in hosts.items()]
    floors = {n: Side(f"{n}-random-init", h, floor_paths[n], "random-init floor", by_label[n], host_fingerprint(h))
              for n, h in floor_hosts.items()}
    seeds = {n: Side(f"{n}-model-seed", h, seed_paths[n], "model-seed skyline", by_label[n], host_fingerprint(h))
             for n, h in seed_hosts.items()}
    cmp = run_compare(run, cfg, sides, floors, seeds, st.alignment, device, log)
    n_tok = int(sides[0].stream.mask.sum())
    return RunResults(title, now(), environment(device), corpus_entry(corpus, n_tok, cfg.corpus), models=cmp["models"],
                      pairs=cmp["pairs"], families=cmp["families"], dictionaries=cmp["dictionaries"], config=config_dict(cfg),
                      joint=cmp.get("joint"))
