"""Dictionary evaluation (``universality eval``): SAEBench's core metrics and sparse probing, one table per dictionary."""

from __future__ import annotations

from typing import Mapping

from ..checks import need
from ..page import Page, csv_text
from .base import Section, register

CORE_ROWS = (
    ("L0 (active latents per token)", "l0"), ("explained variance (1 - FVU)", "explained_variance"), ("FVU", "fvu"),
    ("MSE", "mse"), ("cosine similarity", "cossim"), ("L2 ratio (out / in)", "l2_ratio"),
    ("relative reconstruction bias", "relative_reconstruction_bias"),
    ("CE loss: clean", "ce_loss_without_sae"), ("CE loss: dictionary spliced in", "ce_loss_with_sae"),
    ("CE loss: zero-ablated", "ce_loss_with_ablation"), ("CE loss score", "ce_loss_score"),
    ("KL to clean: spliced", "kl_div_with_sae"), ("KL to clean: ablated", "kl_div_with_ablation"), ("KL score", "kl_div_score"),
    ("dead latents (fraction)", "dead_fraction"), ("dense latents (> 10% of tokens)", "dense_fraction"),
    ("max encoder cosine (mean)", "average_max_encoder_cosine_sim"), ("max decoder cosine (mean)", "average_max_decoder_cosine_sim"),
    ("tokens", "n_tokens"),
)
"""(label, CoreMetrics field) of the per-dictionary table, in order."""


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Evaluation(Section):
    """results.json ``evaluations`` (one :class:`~universality.sae.Evaluation` per dictionary)."""

    key = "evaluations"

    def validate(self, res: Mapping) -> None:
        """Every entry names its dictionary and hook and has the core metrics."""
        for i, e in enumerate(res.get("evaluations") or []):
            w = f"evaluations[{i}]"
            need(e, "dictionary", w, str)
            need(e, "hook", w, str)
            core = need(e, "core", w, dict)
            for _, key in CORE_ROWS:
                need(core, key, f"{w}.core", (int, float))
            need(e, "density", w, dict)

    def render(self, res: Mapping, page: Page) -> None:
        """Per dictionary: the core-metric table, the feature-density histogram and the probing table."""
        evs = res.get("evaluations") or []
        if not evs:
            return
        page.heading("Dictionary evaluation (SAEBench metrics)")
        page.para("Each dictionary was run on the model's own activations at its hook. CE loss score = (CE ablated − CE spliced) / "
                  "(CE ablated − CE clean): 1 is a perfect dictionary, 0 as bad as zeroing the hook. SAEBench's JSON files lie "
                  "next to each stage's record (eval-<name>/saebench_core.json, saebench_sparse_probing.json).")
        for e in evs:
            page.heading(f"{e['dictionary']} at {e['hook']}")
            page.table(["metric", "value"], [[label, _fmt(e["core"][key])] for label, key in CORE_ROWS])
            d = e["density"]
            edges = d["edges"]
            page.table(["firing frequency", "latents"],
                       [["never (dead)", d["n_dead"]]] + [[f"1e{int(edges[i])} – 1e{int(edges[i + 1])}", c] for i, c in enumerate(d["counts"])])
            if e.get("probing"):
                ks = sorted({int(k) for p in e["probing"] for k in p["sae_top_k"]})
                page.table(["task", "tokens (train/test)", "activations: all", "dictionary: all"] + [f"dictionary: top {k}" for k in ks]
                           + [f"activations: top {k}" for k in ks[:1]],
                           [[p["task"], f"{p['n_train']}/{p['n_test']}", _fmt(p["llm_test_accuracy"]), _fmt(p["sae_test_accuracy"])]
                            + [_fmt(p["sae_top_k"].get(str(k), p["sae_top_k"].get(k, ""))) for k in ks]
                            + [_fmt(p["llm_top_k"].get(str(k), p["llm_top_k"].get(k, ""))) for k in ks[:1]] for p in e["probing"]])

    def tables(self, res: Mapping) -> dict[str, str]:
        """``evaluation.csv``: one row per dictionary, one column per core metric."""
        evs = res.get("evaluations") or []
        if not evs:
            return {}
        keys = [k for _, k in CORE_ROWS]
        return {"evaluation.csv": csv_text([["dictionary", "hook"] + keys] + [[e["dictionary"], e["hook"]] + [e["core"][k] for k in keys] for e in evs])}

    def findings(self, res: Mapping) -> list[str]:
        """Per dictionary: sparsity, reconstruction and how much of the model's loss it keeps."""
        out = []
        for e in res.get("evaluations") or []:
            c = e["core"]
            out.append(f"Dictionary {e['dictionary']} at {e['hook']}: L0 {c['l0']:.1f}, explained variance {c['explained_variance']:.3f}, "
                       f"CE loss score {c['ce_loss_score']:.3f} (spliced CE {c['ce_loss_with_sae']:.3f} vs clean {c['ce_loss_without_sae']:.3f}), "
                       f"{100 * c['dead_fraction']:.1f}% dead latents.")
        return out


register(Evaluation(), before="Timings")
