"""A synthetic but schema-complete results dictionary, for trying the report without running a pipeline."""

from __future__ import annotations

import platform

import numpy as np

from ..matching.stats import summarize_values
from ..results import SCHEMA


def _beta(rng: np.random.Generator, mean: float, n: int, conc: float = 12.0) -> np.ndarray:
    return rng.beta(mean * conc, (1 - mean) * conc, size=n)


def example_results(seed: int = 0, n_features: int = 256) -> dict:
    """A results dict following :data:`~universality.reports.schema.SCHEMA` filled with random draws.

    Three models (transformer, mamba, rwkv) with 4 layers each, two pairs with
    floors and skylines, a layer grid whose diagonal is strongest, families,
    seed overlap for TopK and ReLU, induction and write-lag profiles. Token
    contexts deliberately contain HTML so escaping can be checked.
    """
    rng = np.random.default_rng(seed)
    names = [("transformer", "transformer"), ("mamba", "mamba"), ("rwkv", "rwkv")]
    models = [{"name": n, "arch": a, "role": "model", "n_layers": 4, "d_model": 128, "n_params": 2_500_000 + i,
               "path": f"/zoo/{n}", "fingerprint": f"{rng.integers(1 << 60):016x}"} for i, (n, a) in enumerate(names)]
    models.append({"name": "mamba-init", "arch": "mamba", "role": "random-init baseline", "n_layers": 4, "d_model": 128})
    pairs = []
    for a, b, mean in (("transformer", "mamba", 0.55), ("transformer", "rwkv", 0.5), ("mamba", "rwkv", 0.52)):
        grid = [[float(0.6 - 0.08 * abs(i - j) + 0.02 * rng.standard_normal()) for j in range(4)] for i in range(4)]
        ctx = lambda tag: [{"tokens": ["def", " f", "(", f"<{tag}>", "):", " return", " x"], "target": 3,
                            "activation": float(rng.uniform(1, 5))} for _ in range(2)]
        pairs.append({
            "a": a, "b": b, "layer_a": 2, "layer_b": 2, "hook": "resid_post",
            "a_to_b": summarize_values(_beta(rng, mean, n_features)),
            "b_to_a": summarize_values(_beta(rng, mean - 0.03, n_features)),
            "references": {
                "random-init floor": summarize_values(_beta(rng, 0.25, n_features)),
                "SAE-seed skyline": summarize_values(_beta(rng, 0.8, n_features)),
                "model-seed skyline": summarize_values(_beta(rng, 0.7, n_features)),
            },
            "grid": {"layers_a": [0, 1, 2, 3], "layers_b": [0, 1, 2, 3], "stat": "mean", "values": grid},
            "top_matches": [{"a_feature": int(rng.integers(n_features)), "b_feature": int(rng.integers(n_features)),
                             "r": float(rng.uniform(0.8, 0.99)), "contexts": {"a": ctx("script"), "b": ctx("b&c")}} for _ in range(3)],
        })
    seed_overlap = []
    for kind, sf in (("topk", 0.45), ("relu", 0.6)):
        thr = [0.5, 0.6, 0.7, 0.8, 0.9]
        seed_overlap.append({"model": "transformer", "hook": "blocks.2.mlp_out", "kind": kind, "n_latents": n_features,
                             "k": 8 if kind == "topk" else None, "seeds": [0, 1, 2], "threshold": 0.7,
                             "shared_fraction": sf, "shared_fraction_std": 0.03, "agreement": 0.9,
                             "n_seed_hist": [int(n_features * (1 - sf) * 0.6), int(n_features * (1 - sf) * 0.4), int(n_features * sf)],
                             "curve": {"thresholds": thr, "shared_fraction": [min(1.0, sf + 0.7 - t) for t in thr]}})
    induction, write_lag = [], []
    for n, a in names:
        scores = [float(x) for x in rng.uniform(0, 0.3, 4)]
        scores[2] = 0.8
        induction.append({"model": n, "arch": a, "score_name": "induction score", "layer_scores": scores,
                          "components": [{"component": f"blocks.{i}.mixer", "position": "last", "effect": float(s),
                                          "normalised_effect": float(s / max(scores))} for i, s in enumerate(scores)],
                          "icl_score": 1.5, "clean_metric": 4.0, "corrupted_metric": 1.0})
        layers = []
        for i in range(4):
            eff = rng.dirichlet([1, 1, 1, 1])
            if a == "mamba":
                eff = np.array([0.05, 0.85, 0.07, 0.03])
            layers.append({"layer": i, "effect": [float(x) for x in eff / eff.sum()], "peak": int(np.argmax(eff))})
        write_lag.append({"model": n, "arch": a, "layers": layers})
    return {
        "schema": SCHEMA,
        "title": "Example universality report (synthetic numbers)",
        "created": "1970-01-01T00:00:00Z",
        "environment": {"universality": "example", "python": platform.python_version(), "device": "cpu"},
        "corpus": {"name": "synthetic", "n_tokens": 20_000, "fingerprint": "0" * 16, "source": "example_results()"},
        "dictionaries": {"kind": "topk", "n_latents": n_features, "k": 8, "hook": "resid_post"},
        "models": models,
        "pairs": pairs,
        "families": {"hosts": [n for n, _ in names], "threshold": 0.5, "n_families": 120,
                     "by_size": {"1": 60, "2": 35, "3": 25},
                     "examples": [{"members": {"transformer": 3, "mamba": 17, "rwkv": 99}, "mean_r": 0.81}]},
        "seed_overlap": seed_overlap,
        "induction": induction,
        "write_lag": write_lag,
        "missing": [],
    }
