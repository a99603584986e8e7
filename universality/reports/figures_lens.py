"""Figures of the lens and steering sections (PNG bytes from plain result dicts, as in :mod:`.figures`)."""

from __future__ import annotations

from typing import Mapping, Sequence

from matplotlib.figure import Figure

from .figures import _PALETTE, _png


def lens_curves(entries: Sequence[Mapping]) -> bytes:
    """KL to the final distribution and top-1 agreement against relative depth: one colour per host, solid for the
    tuned lens, dashed for the logit lens, bands for the 95% intervals."""
    fig = Figure(figsize=(9.0, 3.4))
    ax_kl, ax_top = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, e in enumerate(entries):
        colour = _PALETTE[i % len(_PALETTE)]
        for c in e["curves"]:
            style = "-" if c["lens"] == "tuned" else "--"
            label = f"{e['model']} ({c['lens']})"
            for ax, key in ((ax_kl, "kl"), (ax_top, "top1")):
                ax.plot(e["depths"], c[key], style, marker="o", markersize=3, color=colour, label=label)
                ax.fill_between(e["depths"], [lo for lo, _ in c[key + "_ci"]], [hi for _, hi in c[key + "_ci"]],
                                color=colour, alpha=0.15, linewidth=0)
    ax_kl.set_ylabel("KL(final || lens), nats")
    ax_top.set_ylabel("top-1 agreement with the final prediction")
    ax_top.set_ylim(0, 1.02)
    for ax in (ax_kl, ax_top):
        ax.set_xlabel("relative depth (block + 1) / blocks")
        ax.grid(alpha=0.3)
    ax_top.legend(fontsize=6)
    return _png(fig)


def dose_response(entries: Sequence[Mapping]) -> bytes:
    """Metric against multiplier, one line per (host, method) with its 95% band."""
    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    for i, e in enumerate(entries):
        colour = _PALETTE[i % len(_PALETTE)]
        ax.plot(e["multipliers"], e["values"], marker="o", markersize=3, color=colour,
                linestyle="-" if e["method"] != "state" else ":", label=f"{e['model']} {e['method']} ({e['hook']})")
        ax.fill_between(e["multipliers"], [lo for lo, _ in e["ci"]], [hi for _, hi in e["ci"]], color=colour, alpha=0.15,
                        linewidth=0)
    ax.set_xlabel("multiplier")
    ax.set_ylabel(entries[0]["metric"] if entries else "metric")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return _png(fig)
