"""Seed stability of dictionaries: how many latents two or more training seeds share (Paulo & Belrose)."""

from __future__ import annotations

from typing import Mapping

from .. import figures as F
from ..page import Page, csv_text
from ..checks import need
from .base import Section, register


class SeedStability(Section):
    """results.json ``seed_overlap`` (one :class:`~universality.matching.SeedOverlapResult` per kind and size)."""

    key = "seed_overlap"

    def validate(self, res: Mapping) -> None:
        """Every entry names its model and kind and has a numeric shared fraction."""
        for i, s in enumerate(res.get("seed_overlap") or []):
            w = f"seed_overlap[{i}]"
            for key in ("model", "kind"):
                need(s, key, w, str)
            need(s, "shared_fraction", w, (int, float))

    def render(self, res: Mapping, page: Page) -> None:
        """The table, the shared-fraction-vs-threshold curve and the N-seed histogram."""
        so = res.get("seed_overlap") or []
        page.heading("Seed stability of dictionaries")
        if not so:
            page.para("No seed-stability study in this run.")
            return
        page.table(["model", "hook", "kind", "latents", "k", "seeds", "shared fraction", "± (seed pairs)", "assignments agree"],
                   [[e["model"], e.get("hook", ""), e["kind"], e.get("n_latents", ""), e.get("k", "") or "",
                     ",".join(str(s) for s in e.get("seeds", [])), e["shared_fraction"], e.get("shared_fraction_std", ""),
                     e.get("agreement", "")] for e in so])
        if any(e.get("curve") for e in so):
            page.figure("seed_overlap_curve", "Shared fraction of latents against the cosine threshold.", lambda: F.seed_overlap_curves(so))
        if any(e.get("n_seed_hist") for e in so):
            page.figure("seed_histogram", "In how many seeds each latent of seed 0 reappears.", lambda: F.seed_histogram(so))

    def tables(self, res: Mapping) -> dict[str, str]:
        """``seed_overlap.csv``: one row per entry."""
        so = res.get("seed_overlap") or []
        if not so:
            return {}
        return {"seed_overlap.csv": csv_text([["model", "hook", "kind", "n_latents", "k", "seeds", "shared_fraction", "shared_fraction_std"]]
                                             + [[e["model"], e.get("hook", ""), e["kind"], e.get("n_latents", ""), e.get("k", ""),
                                                 " ".join(map(str, e.get("seeds", []))), e["shared_fraction"],
                                                 e.get("shared_fraction_std", "")] for e in so])}

    def findings(self, res: Mapping) -> list[str]:
        """Shared fraction per kind at cosine 0.7; TopK vs ReLU-L1 called equally stable when they differ by less than
        the larger spread over seed pairs (at least 0.01)."""
        so = res.get("seed_overlap") or []
        if not so:
            return []
        parts = [f"{e['kind']} on {e['model']} shares {100 * e['shared_fraction']:.0f}% of latents between seeds"
                 + (f" (±{100 * e['shared_fraction_std']:.0f} pts over seed pairs)" if e.get("shared_fraction_std") is not None else "")
                 for e in so]
        line = "Seed stability at cosine 0.7: " + "; ".join(parts) + "."
        kinds = {e["kind"]: e["shared_fraction"] for e in so}
        if "relu" in kinds and "topk" in kinds:
            by = {e["kind"]: e for e in so}
            spread = max(by["relu"].get("shared_fraction_std") or 0.0, by["topk"].get("shared_fraction_std") or 0.0, 0.01)
            if abs(kinds["relu"] - kinds["topk"]) <= spread:
                line += " TopK and ReLU-L1 are equally stable within the spread over seed pairs."
            else:
                more = "ReLU-L1" if kinds["relu"] > kinds["topk"] else "TopK"
                line += f" {more} dictionaries were the more stable here."
        return [line]


register(SeedStability())
