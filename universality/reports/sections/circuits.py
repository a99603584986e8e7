"""Feature circuits: every model's attribution graph (scores, size, the pruned graph drawn) and their comparison."""

from __future__ import annotations

import re
from typing import Mapping

from ..checks import need
from ..page import Page, csv_text, esc
from .base import Section, register

_UNSAFE = re.compile(r"<\s*(script|foreignObject|iframe)|\son[a-z]+\s*=|javascript:|href\s*=", re.IGNORECASE)


def _sanitised_svg(svg: str) -> str:
    """The graph SVG, accepted only when it is our own drawing (an ``<svg`` document without scripts)."""
    s = svg.strip()
    if not s.startswith("<svg") or _UNSAFE.search(s):
        return ""
    return s


class Circuits(Section):
    """results.json ``circuit_graphs`` (a ``CircuitGraphsResult``: graphs per model, comparisons, notes)."""

    key = "circuit_graphs"

    def validate(self, res: Mapping) -> None:
        """Every graph names its model and scores; every comparison names both models."""
        cg = res.get("circuit_graphs")
        if cg is None:
            return
        for i, g in enumerate(need(cg, "graphs", "circuit_graphs", list)):
            need(g, "model", f"circuit_graphs.graphs[{i}]", str)
            need(g, "replacement_score", f"circuit_graphs.graphs[{i}]", (int, float))
            need(g, "completeness_score", f"circuit_graphs.graphs[{i}]", (int, float))
        for i, c in enumerate(cg.get("comparisons") or []):
            need(c, "model_a", f"circuit_graphs.comparisons[{i}]", str)
            need(c, "model_b", f"circuit_graphs.comparisons[{i}]", str)

    def render(self, res: Mapping, page: Page) -> None:
        """A table of the graphs, their induction shape, the comparisons, and each pruned graph as SVG."""
        cg = res.get("circuit_graphs")
        if cg is None:
            return
        page.heading("Feature circuits (attribution graphs)")
        page.para("Each model is frozen at the prompt (attention patterns, Mamba's Δ/B/C/gate, RWKV's WKV weights and "
                  "every norm scale fixed) with one transcoder per block; edges are exact direct effects. Pruned as "
                  "circuit-tracer prunes (node 0.8 / edge 0.98 of the influence on the logits by default).")
        for note in cg.get("notes") or []:
            page.para(note)
        graphs = cg.get("graphs") or []
        page.table(["model", "arch", "target", "p", "active features", "kept features", "kept edges", "replacement",
                    "completeness", "seconds"],
                   [[g["model"], g["arch"], (g.get("targets") or [""])[0], (g.get("target_probabilities") or [0.0])[0],
                     g.get("n_active_features", ""), g.get("n_kept_features", ""), g.get("n_kept_edges", ""),
                     g["replacement_score"], g["completeness_score"], g.get("seconds", "")] for g in graphs])
        shaped = [g for g in graphs if g.get("induction")]
        if shaped:
            page.table(["model", "answer p", "answer rank", "previous-token step", "copy step", "chained", "copy share"],
                       [[g["model"], g["induction"]["answer_probability"], g["induction"]["answer_rank"] + 1,
                         g["induction"]["previous_token_step"], g["induction"]["copy_step"], g["induction"]["chained"],
                         g["induction"]["copy_share"]] for g in shaped])
        comps = cg.get("comparisons") or []
        page.table(["model A", "model B", "A's influence with partner in B", "B's influence with partner in A", "same shape"],
                   [[c["model_a"], c["model_b"], c["share_a_in_b"], c["share_b_in_a"],
                     "" if c.get("same_shape") is None else c["same_shape"]] for c in comps])
        for g in graphs:
            svg = _sanitised_svg(g.get("svg") or "")
            caption = (f"{g['model']}: pruned attribution graph (blocks bottom to top, positions left to right; "
                       f"circuit-tracer JSON in {g.get('graph_file', '')}).")
            if svg:
                page.html.append(f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>")
            page.md.append(f"{caption} Top path: {' <- '.join(g.get('top_path') or [])}.")

    def tables(self, res: Mapping) -> dict[str, str]:
        """``circuits.csv``: one row per graph."""
        cg = res.get("circuit_graphs")
        if not cg or not cg.get("graphs"):
            return {}
        keys = ["model", "arch", "n_active_features", "n_kept_nodes", "n_kept_features", "n_kept_edges",
                "replacement_score", "completeness_score", "frozen_logit_error", "seconds"]
        return {"circuits.csv": csv_text([keys] + [[g.get(k, "") for k in keys] for g in cg["graphs"]])}

    def findings(self, res: Mapping) -> list[str]:
        """Per graph its replacement score; per comparison the two shared-influence shares (rule: as measured)."""
        cg = res.get("circuit_graphs")
        if not cg:
            return []
        out = [f"The attribution graph of {g['model']} ({g['arch']}) explains {g['replacement_score']:.0%} of the "
               f"token-to-logit influence through features (replacement score), {g['completeness_score']:.0%} complete."
               for g in cg.get("graphs") or []]
        for c in cg.get("comparisons") or []:
            line = (f"{c['share_a_in_b']:.0%} of {c['model_a']}'s feature influence and {c['share_b_in_a']:.0%} of "
                    f"{c['model_b']}'s sit on features whose MPPC partner is in the other graph")
            if c.get("same_shape") is not None:
                line += "; the induction graphs have the same shape" if c["same_shape"] else "; the induction graphs differ in shape"
            out.append(line + ".")
        return out


register(Circuits())
