"""``compare``: features of two or more hosts on the same tokens — MPPC both ways, depth grid, floor, skylines, families.

Every heavy step is a call into the library (``data``, ``activations``, ``sae``,
``matching``) wrapped in a cached stage of the run directory.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Callable

import numpy as np
import torch

from .._errors import UniversalityError
from ..reports import summarize_values
from .common import cache_stage, encode, hook_name, layer_at, model_entry, train_stage
from .config import CompareConfig
from .rundir import RunDir


class Side:
    """One host as seen by the comparison: its store, the rows that count, and its dictionaries by layer."""

    def __init__(self, label: str, host: Any, path: str, role: str, stream: Any, host_fp: str):
        self.label, self.host, self.path, self.role, self.stream, self.host_fp = label, host, path, role, stream, host_fp
        self.store = None
        self.codes: dict[int, torch.Tensor] = {}
        """Layer → codes of every row of the stream ``[n_rows, n_latents]``."""
        self.coders: dict[int, Any] = {}

    @property
    def mask_rows(self) -> torch.Tensor:
        """Rows of the store that count in statistics (BOS/EOS/pad left out)."""
        return self.stream.mask.reshape(-1).nonzero().squeeze(1)


def mppc_summaries(ca: torch.Tensor, cb: torch.Tensor, n_boot: int, seed: int) -> tuple[dict, dict, Any]:
    """MPPC of codes ``ca`` ``[n, n_a]`` and ``cb`` ``[n, n_b]``: results.json summaries both ways and the raw result.

    The interval of each mean is a bootstrap over tokens when ``n_boot`` > 0: the bias-bounded interval of
    :func:`universality.matching.bias_bounded_interval`, which allows for MPPC's upward bias on finite tokens
    (so it reaches further below the estimate than above it).
    """
    from .. import matching

    r = matching.mppc(ca, cb)
    out = []
    for d in ("a_to_b", "b_to_a"):
        vals = getattr(r, d).max_r.numpy()
        if not np.isfinite(vals).any():
            raise UniversalityError("every feature of a dictionary was dead on these tokens; use more tokens or fewer latents")
        out.append(summarize_values(vals, seed=seed))
    if n_boot:
        iv = matching.bootstrap_mppc(ca, cb, n_boot=n_boot, seed=seed)
        for s, d in zip(out, ("a_to_b", "b_to_a")):
            s["ci"] = [iv[f"{d}.mean"].low, iv[f"{d}.mean"].high]
            s["ci_method"] = "bias-bounded bootstrap over tokens"
    return out[0], out[1], r


def _token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    if tokenizer is None:
        return [f"<{i}>" for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def contexts(side: Side, rows: torch.Tensor, codes: torch.Tensor, feature: int, n: int = 2, window: int = 10) -> list[dict]:
    """The ``n`` top-activating contexts of ``feature``: token texts up to and including the active token."""
    col = codes[:, feature]
    top = torch.topk(col, min(n, col.numel())).indices
    seq_len = side.stream.seq_len
    out = []
    for i in top.tolist():
        if col[i] <= 0:
            continue
        row = int(rows[i])
        s, pos = divmod(row, seq_len)
        start = max(0, pos - window + 1)
        ids = side.stream.tokens[s, start:pos + 1].tolist()
        out.append({"tokens": _token_texts(side.host.tokenizer, ids), "target": pos - start, "activation": float(col[i])})
    return out


def top_matches(a: Side, b: Side, rows_a, rows_b, ca, cb, result, n: int) -> list[dict]:
    """The ``n`` features of A with the highest MPPC (active on ≥ 5 tokens) and their partners' contexts."""
    r = result.a_to_b.max_r.clone()
    active = (ca > 0).sum(0)
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
    return alignment.rows_a, alignment.rows_b


def run_compare(run: RunDir, cfg: CompareConfig, sides: list[Side], floors: dict[str, Side], seeds: dict[str, Side],
                alignment: Any, device: torch.device, log: Callable[[str], None]) -> dict:
    """Dictionaries, MPPC per pair with floor and skylines, the layer grid and N-way families → results sections.

    ``sides`` are the compared hosts; ``floors`` maps a label to its random-init stand-in; ``seeds`` maps a label
    to another training seed of it. Returns ``{"models", "pairs", "families", "dictionaries"}`` for results.json.
    """
    from .. import matching

    hook = cfg.hook

    def layers_of(side: Side) -> list[int]:
        main = layer_at(side.host, 0.5)
        if cfg.layers is None:
            ls = set(range(side.host.n_layers))
        else:
            ls = {layer_at(side.host, d) for d in cfg.layers}
        return sorted(ls | {main})

    def dictionary(side: Side, layer: int, seed: int = cfg.seed) -> torch.Tensor:
        key = layer if seed == cfg.seed else (layer, seed)
        if key in side.codes:
            return side.codes[key]
        h = hook_name(layer, hook)
        coder = train_stage(run, side.store, h, side.mask_rows, tag=f"{side.label}-{h}-{cfg.kind}-s{seed}", host_fp=side.host_fp,
                            kind=cfg.kind, n_latents=cfg.n_latents, k=cfg.k, seed=seed, epochs=cfg.sae_epochs, device=device)
        side.codes[key] = encode(coder, side.store.read(h))
        return side.codes[key]

    def dictionary_key(side: Side, layer: int, seed: int = cfg.seed) -> dict:
        """Everything a dictionary's codes depend on: host weights, token stream, hook and training settings."""
        return {"host": side.host_fp, "stream": side.stream.fingerprint, "hook": hook_name(layer, hook), "kind": cfg.kind,
                "n_latents": cfg.n_latents, "k": cfg.k, "seed": seed, "epochs": cfg.sae_epochs}

    all_sides = sides + list(floors.values()) + list(seeds.values())
    for side in all_sides:
        layers = layers_of(side) if side in sides else [layer_at(side.host, 0.5)]
        hooks = [hook_name(layer, hook) for layer in layers]
        side.store = cache_stage(run, side.label, side.host, hooks, side.stream, side.host_fp)

    pairs, pair_results = [], {}
    for a, b in combinations(sides, 2):
        rows_a, rows_b = rows_between(a, b, alignment)
        la, lb = layer_at(a.host, 0.5), layer_at(b.host, 0.5)
        log(f"compare {a.label} × {b.label}: layers {la} and {lb}")

        def pair_stats(a=a, b=b, rows_a=rows_a, rows_b=rows_b, la=la, lb=lb):
            ca, cb = dictionary(a, la)[rows_a], dictionary(b, lb)[rows_b]
            s_ab, s_ba, res = mppc_summaries(ca, cb, cfg.n_boot, cfg.seed)
            refs = {}
            if b.label in floors:
                fl = floors[b.label]
                refs["random-init floor"] = mppc_summaries(ca, dictionary(fl, layer_at(fl.host, 0.5))[rows_b], cfg.ref_boot, cfg.seed)[0]
            if cfg.sae_seed_skyline:
                ra = a.mask_rows
                refs["SAE-seed skyline"] = mppc_summaries(dictionary(a, la)[ra], dictionary(a, la, cfg.seed + 1)[ra],
                                                          cfg.ref_boot, cfg.seed)[0]
            if a.label in seeds:
                sd, ra = seeds[a.label], a.mask_rows
                refs["model-seed skyline"] = mppc_summaries(dictionary(a, la)[ra], dictionary(sd, layer_at(sd.host, 0.5))[ra],
                                                            cfg.ref_boot, cfg.seed)[0]
            grid_a, grid_b = layers_of(a), layers_of(b)
            values = [[float(matching.mppc(dictionary(a, i)[rows_a], dictionary(b, j)[rows_b]).summary("a_to_b").mean)
                       for j in grid_b] for i in grid_a]
            values = [[v if np.isfinite(v) else 0.0 for v in row] for row in values]
            return {"a": a.label, "b": b.label, "layer_a": la, "layer_b": lb, "hook": hook, "a_to_b": s_ab, "b_to_a": s_ba,
                    "references": refs, "grid": {"layers_a": grid_a, "layers_b": grid_b, "stat": "mean", "values": values},
                    "top_matches": top_matches(a, b, rows_a, rows_b, ca, cb, res, cfg.top_matches)}

        inputs = {"a": a.host_fp, "b": b.host_fp, "stream": [a.stream.fingerprint, b.stream.fingerprint],
                  "floor": floors[b.label].host_fp if b.label in floors else None,
                  "seed": seeds[a.label].host_fp if a.label in seeds else None,
                  "cfg": {k: getattr(cfg, k) for k in ("hook", "layers", "kind", "n_latents", "k", "sae_epochs", "n_boot", "ref_boot", "seed",
                                                        "sae_seed_skyline", "top_matches")}}
        pairs.append(run.stage(f"pair-{a.label}-{b.label}", inputs, pair_stats))

    families = None
    if len(sides) >= 3:
        def fam():
            results = {}
            for a, b in combinations(sides, 2):
                rows_a, rows_b = rows_between(a, b, alignment)
                results[(a.label, b.label)] = matching.mppc(dictionary(a, layer_at(a.host, 0.5))[rows_a],
                                                            dictionary(b, layer_at(b.host, 0.5))[rows_b])
            f = matching.families_from_mppc({s.label: cfg.n_latents for s in sides}, results, threshold=cfg.family_threshold)
            by_size = {str(m): int(f.present_in[m]) for m in range(1, len(sides) + 1)}
            examples = []
            fam_ids = [int(i) for i in torch.nonzero(f.family_hosts == len(sides)).squeeze(1)[:5]]
            for fid in fam_ids:
                members = {}
                for s in sides:
                    idx = torch.nonzero(f.labels[s.label] == fid).squeeze(1)
                    members[s.label] = " ".join(f"#{int(i)}" for i in idx[:3])
                examples.append({"members": members})
            return {"hosts": [s.label for s in sides], "threshold": cfg.family_threshold, "n_families": int(f.family_hosts.numel()),
                    "by_size": by_size, "examples": examples}

        # everything the families depend on: each middle-layer dictionary (host, tokens, hook, training) and the threshold
        families = run.stage("families", {"dictionaries": [dictionary_key(s, layer_at(s.host, 0.5)) for s in sides],
                                          "threshold": cfg.family_threshold}, fam)

    models = [model_entry(s.label, s.host, s.path, s.role) for s in all_sides]
    return {"models": models, "pairs": pairs, "families": families,
            "dictionaries": {"hook": hook, "kind": cfg.kind, "n_latents": cfg.n_latents, "k": cfg.k, "epochs": cfg.sae_epochs}}
