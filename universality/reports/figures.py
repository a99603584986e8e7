"""Figures of the report, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Each function takes plain result dictionaries (see ``docs/report.md``) and returns
``bytes`` of a PNG; no global pyplot state is touched, so they are safe to call
from any thread and never need a display.
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_REF_STYLES = {"floor": ("#999999", "--"), "skyline": ("#2a9d8f", ":")}
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _ref_style(label: str) -> tuple[str, str]:
    low = label.lower()
    if "floor" in low or "random" in low:
        return _REF_STYLES["floor"]
    return _REF_STYLES["skyline"]


def _density(summary: Mapping) -> tuple[np.ndarray, np.ndarray]:
    edges = np.asarray(summary["hist"]["edges"], dtype=float)
    counts = np.asarray(summary["hist"]["counts"], dtype=float)
    total = counts.sum()
    return edges, counts / total if total else counts


def mppc_distribution(pair: Mapping) -> bytes:
    """Step histograms of MPPC (max Pearson r per feature, A→B) for a pair and its references.

    ``pair`` is one ``results["pairs"]`` entry; draws ``a_to_b`` solid, each
    ``references`` entry (floor grey dashed, skylines teal dotted) and marks the means.
    """
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    curves = [(f"{pair['a']} → {pair['b']}", pair["a_to_b"], "#1f77b4", "-")]
    for i, (label, s) in enumerate((pair.get("references") or {}).items()):
        if s:
            color, ls = _ref_style(label)
            if ls == ":" and i % 2:
                color = "#e76f51"
            curves.append((label, s, color, ls))
    for label, s, color, ls in curves:
        edges, dens = _density(s)
        ax.stairs(dens, edges, color=color, linestyle=ls, linewidth=1.8, label=f"{label} (mean {s['mean']:.2f})")
        ax.axvline(s["mean"], color=color, linestyle=ls, linewidth=0.8, alpha=0.7)
    ax.set_xlabel("MPPC: max Pearson r of each feature with any feature of the other side")
    ax.set_ylabel("fraction of live features")
    ax.set_title(f"MPPC distribution, layer {pair.get('layer_a', '?')} of {pair['a']} vs layer {pair.get('layer_b', '?')} of {pair['b']}",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def mppc_means(pairs: Sequence[Mapping]) -> bytes:
    """Mean MPPC with its confidence interval for every pair and reference, as a grouped bar chart."""
    fig = Figure(figsize=(max(4.8, 1.9 * len(pairs)), 3.4))
    ax = fig.add_subplot()
    labels = sorted({lab for p in pairs for lab, s in (p.get("references") or {}).items() if s})
    series = ["pair"] + labels
    width = 0.8 / len(series)
    for j, name in enumerate(series):
        means, lo, hi, xs = [], [], [], []
        for i, p in enumerate(pairs):
            s = p["a_to_b"] if name == "pair" else (p.get("references") or {}).get(name)
            if not s:
                continue
            xs.append(i + (j - (len(series) - 1) / 2) * width)
            means.append(s["mean"])
            lo.append(s["mean"] - s["ci"][0])
            hi.append(s["ci"][1] - s["mean"])
        color = _PALETTE[0] if name == "pair" else _ref_style(name)[0] if "floor" in name.lower() else _PALETTE[2 + j % 5]
        ax.bar(xs, means, width=width, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], capsize=3, color=color,
               label="A → B" if name == "pair" else name)
    ax.set_xticks(range(len(pairs)), [f"{p['a']}\nvs {p['b']}" for p in pairs], fontsize=8)
    ax.set_ylabel("mean MPPC (95% CI)")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def layer_grid(pair: Mapping) -> bytes:
    """Heatmap of an MPPC summary (``grid.stat``, e.g. mean) for every layer of A × every layer of B."""
    g = pair["grid"]
    vals = np.asarray(g["values"], dtype=float)
    fig = Figure(figsize=(1.2 + 0.55 * len(g["layers_b"]) + 1.2, 1.0 + 0.45 * len(g["layers_a"]) + 0.6))
    ax = fig.add_subplot()
    im = ax.imshow(vals, cmap="viridis", vmin=np.nanmin(vals), vmax=np.nanmax(vals), aspect="auto", origin="lower")
    ax.set_xticks(range(len(g["layers_b"])), [str(x) for x in g["layers_b"]])
    ax.set_yticks(range(len(g["layers_a"])), [str(x) for x in g["layers_a"]])
    ax.set_xlabel(f"layer of {pair['b']}")
    ax.set_ylabel(f"layer of {pair['a']}")
    if vals.size <= 144:
        for (i, j), v in np.ndenumerate(vals):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v < (np.nanmin(vals) + np.nanmax(vals)) / 2 else "black")
    fig.colorbar(im, ax=ax, label=f"{g.get('stat', 'mean')} MPPC")
    ax.set_title(f"{pair['a']} × {pair['b']}: depth correspondence", fontsize=10)
    return _png(fig)


def seed_overlap_curves(entries: Sequence[Mapping]) -> bytes:
    """Shared fraction against the cosine threshold, one line per (model, kind, size) seed-overlap entry."""
    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    for i, e in enumerate(entries):
        c = e.get("curve")
        if not c:
            continue
        label = f"{e['model']} {e['kind']} n={e.get('n_latents', '?')}" + (f" k={e['k']}" if e.get("k") else "")
        ax.plot(c["thresholds"], c["shared_fraction"], marker="o", markersize=3, color=_PALETTE[i % len(_PALETTE)], label=label)
    ax.axvline(0.7, color="#999999", linestyle="--", linewidth=0.8)
    ax.set_xlabel("cosine threshold (encoder and decoder both above)")
    ax.set_ylabel("shared fraction of latents")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def seed_histogram(entries: Sequence[Mapping]) -> bytes:
    """For N seeds: the fraction of seed-0 latents found in exactly m of the seeds, one bar group per entry."""
    usable = [e for e in entries if e.get("n_seed_hist")]
    fig = Figure(figsize=(5.6, 3.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(usable))
    for i, e in enumerate(usable):
        h = np.asarray(e["n_seed_hist"], dtype=float)
        frac = h / h.sum() if h.sum() else h
        xs = np.arange(1, len(h) + 1) + (i - (len(usable) - 1) / 2) * width
        ax.bar(xs, frac, width=width, color=_PALETTE[i % len(_PALETTE)], label=f"{e['model']} {e['kind']}")
    ax.set_xlabel("number of seeds a latent appears in")
    ax.set_ylabel("fraction of latents")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def family_sizes(families: Mapping) -> bytes:
    """Bar chart: how many N-way feature families span 1, 2, ... hosts."""
    by = families["by_size"]
    sizes = sorted(int(k) for k in by)
    fig = Figure(figsize=(4.8, 3.0))
    ax = fig.add_subplot()
    ax.bar(sizes, [by[str(s)] for s in sizes], color=_PALETTE[3])
    ax.set_xticks(sizes)
    ax.set_xlabel("number of hosts in the family")
    ax.set_ylabel("families")
    ax.set_title(f"N-way families across {', '.join(families['hosts'])}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def induction_heatmap(entries: Sequence[Mapping]) -> bytes:
    """Per-layer induction scores of every model as rows of one heatmap (layers on x; models padded with blanks)."""
    n = max(len(e["layer_scores"]) for e in entries)
    vals = np.full((len(entries), n), np.nan)
    for i, e in enumerate(entries):
        vals[i, : len(e["layer_scores"])] = e["layer_scores"]
    fig = Figure(figsize=(1.8 + 0.6 * n, 0.9 + 0.5 * len(entries)))
    ax = fig.add_subplot()
    im = ax.imshow(vals, cmap="magma", aspect="auto")
    ax.set_yticks(range(len(entries)), [f"{e['model']} ({e.get('arch', '?')})" for e in entries], fontsize=8)
    ax.set_xticks(range(n), [str(i) for i in range(n)])
    ax.set_xlabel("layer")
    for (i, j), v in np.ndenumerate(vals):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < np.nanmax(vals) * 0.6 else "black")
    fig.colorbar(im, ax=ax, label=entries[0].get("score_name", "induction score"))
    return _png(fig)


def component_effects(entry: Mapping, top: int = 12) -> bytes:
    """Horizontal bars: the ``top`` components of a model ranked by normalised patching effect."""
    comps = sorted(entry.get("components") or [], key=lambda c: -abs(c.get("normalised_effect", c.get("effect", 0.0))))[:top]
    fig = Figure(figsize=(5.6, 0.6 + 0.28 * max(1, len(comps))))
    ax = fig.add_subplot()
    labels = [f"{c['component']} @ {c.get('position', '')}" for c in comps][::-1]
    vals = [c.get("normalised_effect", c.get("effect", 0.0)) for c in comps][::-1]
    ax.barh(range(len(vals)), vals, color=_PALETTE[1])
    ax.set_yticks(range(len(vals)), labels, fontsize=7)
    ax.set_xlabel("normalised patching effect on the induction metric")
    ax.set_title(f"{entry['model']}: where induction lives", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def write_lag_profiles(entries: Sequence[Mapping]) -> bytes:
    """One panel per model: each layer's write-lag profile (effect by lag δ) as a heatmap row."""
    fig = Figure(figsize=(3.0 * len(entries) + 0.8, 0.8 + 0.35 * max(len(e["layers"]) for e in entries) + 0.8))
    axes = fig.subplots(1, len(entries), squeeze=False)[0]
    for ax, e in zip(axes, entries):
        n_lag = max(len(layer["effect"]) for layer in e["layers"])
        vals = np.full((len(e["layers"]), n_lag), np.nan)
        for i, layer in enumerate(e["layers"]):
            vals[i, : len(layer["effect"])] = layer["effect"]
        ax.imshow(vals, cmap="Blues", vmin=0, vmax=1, aspect="auto", origin="lower")
        for i, layer in enumerate(e["layers"]):
            ax.text(layer["peak"], i, "●", ha="center", va="center", fontsize=8, color="#d62728")
        ax.set_xticks(range(n_lag), [f"δ={d}" for d in range(n_lag)], fontsize=7)
        ax.set_yticks(range(len(e["layers"])), [str(layer["layer"]) for layer in e["layers"]], fontsize=7)
        ax.set_title(f"{e['model']} ({e.get('arch', '?')})", fontsize=9)
        ax.set_xlabel("lag δ")
    axes[0].set_ylabel("layer")
    fig.suptitle("Write-lag profiles (● = peak lag)", fontsize=10)
    return _png(fig)


def explanation_scores(dictionaries: Sequence[Mapping], scorer: str = "detection") -> bytes:
    """Step histograms of each dictionary's per-feature ``scorer`` balanced accuracy, chance (0.5) dashed.

    ``dictionaries`` are ``results["explanations"]["dictionaries"]`` entries.
    """
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    for i, d in enumerate(dictionaries):
        s = (d.get("scores", {}).get(scorer) or {}).get("balanced_accuracy")
        if not s:
            continue
        edges, dens = _density(s)
        ax.stairs(dens, edges, color=_PALETTE[i % len(_PALETTE)], linewidth=1.6, label=f"{d['name']} (mean {s['mean']:.2f})")
    ax.axvline(0.5, color="#999999", linestyle="--", linewidth=0.9, label="chance")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{scorer} balanced accuracy per feature (held-out windows)")
    ax.set_ylabel("fraction of features")
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)
