"""Feature explanations: interpretability scores per dictionary, agreement of explanations across models, the browser."""

from __future__ import annotations

from typing import Mapping

from .. import figures as F
from ..checks import need
from ..page import Page, csv_text, esc
from .base import Section, register


def _mean(s: Mapping | None) -> float | str:
    return s["mean"] if s else ""


def _ci(s: Mapping | None) -> str:
    return f"[{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]" if s and s.get("ci") and None not in s["ci"] else ""


class Explanations(Section):
    """results.json ``explanations`` (an :class:`~universality.interp.records.ExplanationsResult`)."""

    key = "explanations"

    def validate(self, res: Mapping) -> None:
        """The section names its explainer and lists dictionaries by name."""
        ex = res.get("explanations")
        if ex is None:
            return
        need(res, "explanations", "results", dict)
        need(ex, "explainer", "explanations", str)
        for i, d in enumerate(need(ex, "dictionaries", "explanations", list)):
            need(d, "name", f"explanations.dictionaries[{i}]", str)
            need(d, "scores", f"explanations.dictionaries[{i}]", dict)

    def render(self, res: Mapping, page: Page) -> None:
        """Link to the browser, the score table per dictionary and the cross-model table."""
        ex = res.get("explanations")
        if not ex:
            return
        page.heading("Feature explanations")
        offline = ex["explainer"] == "token-statistics"
        page.para(("Explanations are token statistics (the tokens most over-represented where a feature fires, by "
                   "log-odds with a prior), not a language model's; the scores read them with a token-matching simulator. "
                   if offline else f"Explanations and scores by the language model {ex['explainer'][4:]}. ")
                  + "Scores are on held-out windows: detection (does the window activate the feature?) and fuzzing "
                    "(are the highlighted tokens the activating ones?); 0.5 is chance.")
        if ex.get("browser"):
            page.html.append(f"<p><a href='{esc(ex['browser'])}'>Open the feature browser</a> (every feature: contexts, "
                             "histogram, logits, explanation, scores and partners).</p>")
            page.md.append(f"[Open the feature browser]({ex['browser']})")
        rows = []
        for d in ex["dictionaries"]:
            det, fz = d["scores"].get("detection") or {}, d["scores"].get("fuzz") or {}
            rows.append([d["name"], d.get("kind", ""), d.get("n_latents", ""), d.get("n_explained", ""), d.get("n_skipped", ""),
                         _mean(det.get("balanced_accuracy")), _ci(det.get("balanced_accuracy")), det.get("mean_auc") or "",
                         _mean(fz.get("balanced_accuracy")), fz.get("mean_auc") or ""])
        page.table(["dictionary", "kind", "latents", "explained", "too rare", "detection bal. acc.", "95% CI", "detection AUC",
                    "fuzzing bal. acc.", "fuzzing AUC"], rows)
        if any((d["scores"].get("detection") or {}).get("balanced_accuracy") for d in ex["dictionaries"]):
            page.figure("explanation_scores", "Detection score of each feature's explanation, per dictionary (0.5 is chance).",
                        lambda: F.explanation_scores(ex["dictionaries"]))
        cross = [c for c in ex.get("cross") or [] if "swap" in c]
        if cross:
            crow = []
            for c in cross:
                s, e = c["swap"]["a_on_b"], c.get("embedding") or {}
                sp = e.get("spearman") or {}
                crow.append([f"{c['a']} → {c['b']}", s.get("mean_own") or "", s.get("mean_swap") or "", s.get("mean_random") or "",
                             e.get("mean_cosine") or "", e.get("mean_cosine_random") or "", e.get("hungarian_agreement") or "",
                             "" if sp.get("rho") is None else f"{sp['rho']:.2f} [{sp['low']:.2f}, {sp['high']:.2f}]"])
            page.para("Across models: B's held-out windows of each MPPC partner judged with B's own explanation, with A's "
                      "(swap) and with a random A feature's (control); cosine of the explanations' sentence embeddings "
                      "for MPPC pairs and random pairs; how often a Hungarian assignment on embedding similarity makes "
                      "the MPPC pair; Spearman correlation of MPPC and embedding cosine with a bootstrap interval.")
            page.table(["pair", "own", "swap", "random control", "embedding cos", "random cos", "Hungarian = MPPC",
                        "Spearman ρ [95%]"], crow)
        self._joint(ex.get("joint"), page)
        for m in ex.get("missing") or []:
            page.para(f"Not computed: {m}")

    @staticmethod
    def _joint(j: Mapping | None, page: Page) -> None:
        """How the dictionaries' features match the run's joint dictionary (the browser's cards list them one by one)."""
        if not j:
            return
        if not j.get("kind") or j.get("note"):
            page.para(f"Joint-dictionary partners: not shown ({j.get('note') or 'no joint dictionary'}).")
            return
        rows = [[m] + ["" if s.get(k) is None else s[k] for k in ("n_latents", "mean_best_cosine", "frac_matched", "frac_matched_shared")]
                for m, s in (j.get("summary") or {}).items()]
        thr = next(iter((j.get("summary") or {}).values()), {}).get("threshold", 0.7)
        page.para(f"Joint-dictionary partners ({j['kind']} over {', '.join(j.get('models') or [])}): each feature of a "
                  "model's own dictionary is matched to the joint latents whose decoder direction in that model is "
                  "closest (cosine), and through them to the other models' own features; every card of the browser "
                  f"lists them. Matched: best cosine ≥ {thr}.")
        page.table(["model", "features", "mean best cosine", "matched", "of those: shared joint latent"], rows)

    def tables(self, res: Mapping) -> dict[str, str]:
        """``explanations.csv``: one row per dictionary and scorer."""
        ex = res.get("explanations")
        if not ex:
            return {}
        rows = [["dictionary", "model", "hook", "kind", "n_latents", "scorer", "n_explained", "mean_balanced_accuracy", "mean_auc"]]
        for d in ex["dictionaries"]:
            for sc, v in d["scores"].items():
                rows.append([d["name"], d.get("model", ""), d.get("hook", ""), d.get("kind", ""), d.get("n_latents", ""), sc,
                             d.get("n_explained", ""),
                             _mean(v.get("balanced_accuracy")), v.get("mean_auc") or ""])
        return {"explanations.csv": csv_text(rows)}

    def findings(self, res: Mapping) -> list[str]:
        """Mean detection score over dictionaries; swap vs own vs control for the first pair, when measured."""
        ex = res.get("explanations")
        if not ex or not ex["dictionaries"]:
            return []
        dets = [d["scores"]["detection"]["balanced_accuracy"]["mean"] for d in ex["dictionaries"]
                if (d["scores"].get("detection") or {}).get("balanced_accuracy")]
        if not dets:
            return []
        kind = "token-statistics" if ex["explainer"] == "token-statistics" else ex["explainer"]
        line = (f"Explanations ({kind}) detect their features' held-out windows with balanced accuracy "
                f"{min(dets):.2f}–{max(dets):.2f} across {len(dets)} dictionaries (0.5 is chance).")
        cross = [c for c in ex.get("cross") or [] if "swap" in c and c["swap"]["a_on_b"].get("mean_swap") is not None]
        if cross:
            s = cross[0]["swap"]["a_on_b"]
            line += (f" Swapped onto MPPC partners ({cross[0]['a']} → {cross[0]['b']}) they score {s['mean_swap']:.2f}, "
                     f"against {s['mean_own']:.2f} for the partners' own and {s['mean_random']:.2f} for random features.")
        return [line]


register(Explanations(), before="Timings")
