"""MPPC per compared pair: the table, the mean-with-CI bar chart and each pair's distribution against its references."""

from __future__ import annotations

from typing import Mapping

from ..._errors import UniversalityError
from .. import figures as F
from ..page import Page, csv_text, slug
from ..checks import check_summary, need
from .base import Section, register


def _ci(s: Mapping) -> str:
    return f"{s['mean']:.2f} (95% CI {s['ci'][0]:.2f}–{s['ci'][1]:.2f}, {s['n']} live features)"


def floor_and_skylines(pair: Mapping) -> tuple[tuple[str, Mapping] | None, list[tuple[str, Mapping]]]:
    """The pair's floor reference ``(label, summary)`` (a label containing 'floor' or 'random') and its skylines."""
    floor, skies = None, []
    for label, s in (pair.get("references") or {}).items():
        if not s:
            continue
        if "floor" in label.lower() or "random" in label.lower():
            floor = (label, s)
        else:
            skies.append((label, s))
    return floor, skies


def pair_sentence(pair: Mapping) -> str:
    """One sentence on a pair: its mean MPPC, whether it clears the floor, and how much of the floor→skyline gap it closes.

    Rules: "above the floor" only when the pair's CI lies wholly above the floor's;
    "indistinguishable" when the intervals overlap. The gap fraction is
    (pair − floor) / (skyline − floor) on means, stated for the highest skyline.
    """
    s = pair["a_to_b"]
    text = f"{pair['a']} → {pair['b']}: mean MPPC {_ci(s)}"
    floor, skies = floor_and_skylines(pair)
    if floor:
        f = floor[1]
        if s["ci"][0] > f["ci"][1]:
            text += f", clearly above the {floor[0]} ({f['mean']:.2f})"
        elif s["ci"][1] < f["ci"][0]:
            text += f", below the {floor[0]} ({f['mean']:.2f}), which means these features match worse than chance structure"
        else:
            text += f", statistically indistinguishable from the {floor[0]} ({f['mean']:.2f})"
        if skies:
            label, top = max(skies, key=lambda kv: kv[1]["mean"])
            gap = top["mean"] - f["mean"]
            if gap > 1e-9:
                frac = (s["mean"] - f["mean"]) / gap
                text += f"; it closes {100 * frac:.0f}% of the gap from the floor to the {label} ({top['mean']:.2f})"
    elif skies:
        label, top = max(skies, key=lambda kv: kv[1]["mean"])
        text += f"; the {label} reaches {top['mean']:.2f}"
    return text + "."


def _row(label: str, la: object, lb: object, s: Mapping) -> list:
    return [label, la, lb, s["mean"], f"{s['ci'][0]:.3f}–{s['ci'][1]:.3f}", s["median"], s["frac_above"].get("0.7", ""), s["n"]]


class Pairs(Section):
    """results.json ``pairs``: MPPC both ways with the random-init floor and the skylines."""

    key = "pairs"

    def validate(self, res: Mapping) -> None:
        """Each pair names known models and carries well-formed summaries and a grid of the stated shape."""
        import numpy as np

        names = {m["name"] for m in res["models"]}
        for i, p in enumerate(res.get("pairs") or []):
            w = f"pairs[{i}]"
            for side in ("a", "b"):
                n = need(p, side, w, str)
                if n not in names:
                    raise UniversalityError(f"results.json '{w}.{side}' names model '{n}', which is not in 'models'")
            check_summary(need(p, "a_to_b", w, dict), f"{w}.a_to_b")
            check_summary(p.get("b_to_a"), f"{w}.b_to_a")
            for label, s in (p.get("references") or {}).items():
                check_summary(s, f"{w}.references.{label}")
            grid = p.get("grid")
            if grid:
                vals = np.asarray(need(grid, "values", f"{w}.grid", list), dtype=float)
                la, lb = need(grid, "layers_a", f"{w}.grid", list), need(grid, "layers_b", f"{w}.grid", list)
                if vals.shape != (len(la), len(lb)):
                    raise UniversalityError(f"results.json '{w}.grid.values' must be {len(la)}x{len(lb)} (layers_a x layers_b)")

    def render(self, res: Mapping, page: Page) -> None:
        """The MPPC table of every direction and reference, the bar chart of means and one distribution per pair."""
        pairs = res.get("pairs") or []
        page.heading("Feature universality: MPPC per pair")
        if not pairs:
            page.para("No pairwise comparison in this run.")
            return
        page.para("MPPC is each feature's largest Pearson correlation with any feature of the other model over the same tokens. "
                  "The random-init floor pairs a dictionary with one trained on an untrained copy; skylines pair it with another "
                  "dictionary seed or another model seed of the same architecture.")
        rows = []
        for p in pairs:
            rows.append(_row(f"{p['a']} → {p['b']}", p.get("layer_a", ""), p.get("layer_b", ""), p["a_to_b"]))
            if p.get("b_to_a"):
                rows.append(_row(f"{p['b']} → {p['a']}", p.get("layer_b", ""), p.get("layer_a", ""), p["b_to_a"]))
            for label, s in (p.get("references") or {}).items():
                if s:
                    rows.append(_row(f"  {label}", "", "", s))
        page.table(["direction / reference", "layer", "other layer", "mean", "95% CI", "median", "frac > 0.7", "live features"], rows)
        page.figure("mppc_means", "Mean MPPC per pair with the floor and skylines (error bars: 95% CI).", lambda: F.mppc_means(pairs))
        for p in pairs:
            page.figure(slug("mppc", p["a"], p["b"]), f"MPPC distribution, {p['a']} vs {p['b']}, against floor and skylines.",
                        lambda p=p: F.mppc_distribution(p))

    def tables(self, res: Mapping) -> dict[str, str]:
        """``mppc.csv``: one row per pair direction and reference."""
        rows = [["a", "b", "layer_a", "layer_b", "series", "n", "mean", "ci_low", "ci_high", "median", "frac_above_0.7"]]
        for p in res.get("pairs") or []:
            series = [("a_to_b", p["a_to_b"]), ("b_to_a", p.get("b_to_a"))] + list((p.get("references") or {}).items())
            for name, s in series:
                if s:
                    rows.append([p["a"], p["b"], p.get("layer_a", ""), p.get("layer_b", ""), name, s["n"], s["mean"], s["ci"][0],
                                 s["ci"][1], s["median"], s["frac_above"].get("0.7", "")])
        return {"mppc.csv": csv_text(rows)} if len(rows) > 1 else {}

    def findings(self, res: Mapping) -> list[str]:
        """:func:`pair_sentence` of every pair."""
        return [pair_sentence(p) for p in res.get("pairs") or []]


register(Pairs())
