"""Joint dictionary over the compared hosts: which latents every model shares, which one model keeps, and checks of both."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from ..checks import need
from ..figures import _PALETTE, _png
from ..page import Page, context_html, context_md, csv_text, esc
from .base import Section, register


def share_histogram_png(joint: Mapping) -> bytes:
    """Histogram of every model's decoder-norm share over the live latents (shared ≈ 1/M, exclusive ≈ 1)."""
    h = joint["share_histogram"]
    edges = np.asarray(h["edges"], dtype=float)
    mids, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    names = list(h["counts"])
    fig = Figure(figsize=(6.0, 3.0))
    ax = fig.add_subplot()
    for m, name in enumerate(names):
        off = (m - (len(names) - 1) / 2) * width / max(len(names), 1)
        ax.bar(mids + off, h["counts"][name], width=width / max(len(names), 1), color=_PALETTE[m % len(_PALETTE)], label=name)
    ax.axvline(1 / len(names), color="#555555", ls=":", lw=1)
    ax.set_xlabel("share of the latent's decoder norm (1/M dotted)")
    ax.set_ylabel("latents")
    ax.legend(fontsize=8)
    ax.set_title(f"{joint['kind']}: decoder-norm shares", fontsize=10)
    return _png(fig)


def cross_r2_png(joint: Mapping) -> bytes:
    """Heatmap of the reconstruction R² encoding from model i (rows) and decoding into model j (columns)."""
    vals = np.asarray(joint["cross_r2"], dtype=float)
    names = joint["models"]
    fig = Figure(figsize=(1.8 + 0.9 * len(names), 1.4 + 0.7 * len(names)))
    ax = fig.add_subplot()
    im = ax.imshow(vals, cmap="viridis", vmin=min(0.0, float(np.nanmin(vals))), vmax=1.0)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("decoded into")
    ax.set_ylabel("encoded from")
    for (i, j), v in np.ndenumerate(vals):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.5 else "black")
    fig.colorbar(im, ax=ax, label="R²")
    return _png(fig)


class JointDictionarySection(Section):
    """results.json ``joint`` (``compare --joint``): classes, shares, cross-R², Latent Scaling, MPPC agreement, top latents."""

    key = "joint"

    def validate(self, res: Mapping) -> None:
        """The joint object names its kind and models and has its classes, cross-R² matrix and histogram."""
        j = res.get("joint")
        if j is None:
            return
        need(j, "kind", "joint", str)
        need(j, "models", "joint", list)
        need(j, "classes", "joint", dict)
        need(j, "cross_r2", "joint", list)
        need(j, "share_histogram", "joint", dict)

    def render(self, res: Mapping, page: Page) -> None:
        """Counts with intervals, the two figures, quality next to independent dictionaries, checks and top latents."""
        j = res.get("joint")
        if j is None:
            return
        names = j["models"]
        page.heading(f"Joint dictionary ({j['kind']}) over {', '.join(names)}")
        page.para(f"One dictionary of {j['n_latents']} latents (L0 {j['l0']:.1f}) trained on {j['n_rows']} aligned rows of every model. "
                  f"A latent belongs to each model whose decoder norm is at least 0.3 of its largest; 'shared' means every model. "
                  f"Intervals are Wilson 95% intervals over live latents; {j['n_dead']} latents never fired"
                  + (f"; {j['n_unresolved']} universal-SAE latents write strongly into a model whose encoder never evokes them and are "
                     "left unclassed." if j.get("n_unresolved") else "."))
        page.table(["class", "latents", "fraction", "95% interval"],
                   [[k, v["count"], v["fraction"], f"{v['ci'][0]:.3f} – {v['ci'][1]:.3f}"] for k, v in j["classes"].items()])
        page.figure(f"joint_{j['kind']}_shares", "Per model, the share of each live latent's decoder norm.", lambda: share_histogram_png(j))
        page.figure(f"joint_{j['kind']}_cross_r2", f"Reconstruction R² encoding from one model alone (rows) into each model (columns); "
                    f"off-diagonal mean (cross-R²) {j['cross_r2_mean']:.3f}.", lambda: cross_r2_png(j))
        page.table(["model", "FVU joint", "FVU independent", "L0 independent"],
                   [[n, j["fvu"][n], j["independent"][n]["fvu"], j["independent"][n]["l0"]] for n in names])
        lm = j.get("lm_loss")
        if lm:
            page.para(f"Language-model loss (mean next-token cross-entropy on {j.get('lm_sequences', '?')} sequences) with each "
                      "dictionary's reconstruction spliced in at the hook on the aligned rows; 'recovered' is "
                      "(zero − spliced) / (zero − clean). The independent dictionary has the same width and k.")
            page.table(["model", "clean", "joint", "independent", "zero ablation", "recovered joint", "recovered independent"],
                       [[n, lm[n]["clean"], lm[n]["joint"], lm[n]["independent"], lm[n]["zero_ablation"], lm[n]["joint_recovered"],
                         lm[n]["independent_recovered"]] for n in names if n in lm])
        ls, ag = j["latent_scaling"], j["agreement"]
        page.para(f"Latent Scaling: {ls['n_flagged']} of {ls['n_exclusive']} latents classed exclusive have another model carrying "
                  f"at least {ls['threshold']:g} of their scale (ν), i.e. they look falsely exclusive.")
        sky = ag.get("sae_seed_skyline")
        page.para(f"Agreement with MPPC: of {ag['n_shared']} shared latents, {ag['agreeing']} have best partners in the independent "
                  f"dictionaries that are mutual best matches ({_pct(ag['agreement'])})"
                  + (f"; between two seeds of one dictionary the mutual-best fraction is {_pct(sky)} (SAE-seed skyline)." if sky is not None else "."))
        top = j.get("top_latents") or []
        if top:
            head = "".join(f"<th>{esc(n)}</th>" for n in names)
            rows = []
            for t in top:
                cells = "".join(f"<td>{''.join(context_html(c) for c in t['contexts'].get(n, []))}</td>" for n in names)
                rows.append(f"<tr><td>#{t['latent']} {esc(t['label'])}<br>freq {t['frequency']:.3f}</td>{cells}</tr>")
                page.md.append(f"- **#{t['latent']} ({t['label']}, freq {t['frequency']:.3f})**: "
                               + "; ".join(f"{n}: {' · '.join(context_md(c) for c in t['contexts'].get(n, [])[:2])}" for n in names))
            page.html.append(f"<table><thead><tr><th>latent</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    def tables(self, res: Mapping) -> dict[str, str]:
        """``joint_classes.csv`` (class counts with intervals) and ``joint_cross_r2.csv``."""
        j = res.get("joint")
        if j is None:
            return {}
        classes = [["class", "count", "fraction", "ci_low", "ci_high"]] + [[k, v["count"], v["fraction"], v["ci"][0], v["ci"][1]]
                                                                            for k, v in j["classes"].items()]
        r2 = [["encoded_from"] + j["models"]] + [[n] + row for n, row in zip(j["models"], j["cross_r2"])]
        out = {"joint_classes.csv": csv_text(classes), "joint_cross_r2.csv": csv_text(r2)}
        lm = j.get("lm_loss")
        if lm:
            keys = ["clean", "joint", "independent", "zero_ablation", "joint_recovered", "independent_recovered"]
            out["joint_lm_loss.csv"] = csv_text([["model"] + keys] + [[n] + [lm[n][k] for k in keys] for n in j["models"] if n in lm])
        return out

    def findings(self, res: Mapping) -> list[str]:
        """The shared fraction with its interval, and the cross-R²."""
        j = res.get("joint")
        if j is None:
            return []
        sh = j["classes"].get("shared", {"fraction": 0.0, "ci": [0.0, 0.0]})
        return [f"A joint {j['kind']} over {', '.join(j['models'])} calls {100 * sh['fraction']:.0f}% of its live latents shared by every "
                f"model (95% interval {100 * sh['ci'][0]:.0f}–{100 * sh['ci'][1]:.0f}%); reading one model alone reconstructs the "
                f"others with mean R² {j['cross_r2_mean']:.2f}."]


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.0f}%"


register(JointDictionarySection(), before="Timings")
