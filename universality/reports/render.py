"""Turn validated results into one self-contained ``report.html`` and a ``summary.md``.

The HTML embeds every figure as a base64 PNG, has inline CSS, no scripts and no
external URL, so it opens offline and shows the same everywhere. Every string
that came from results (token text, model names, paths) passes through
:func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from . import figures as F
from .findings import findings

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""Content-Security-Policy of the page: nothing may be fetched; figures are data: URIs."""

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f4f4f4}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.82em;white-space:pre-wrap;word-break:break-word}
.ctx mark{background:#ffd166;padding:0 1px}.muted{color:#777}.summary li{margin:.3em 0}
.side{display:grid;grid-template-columns:1fr 1fr;gap:.8em}
"""


@dataclass
class FigureFile:
    """One figure of the report."""

    name: str
    """File stem (``figures/<name>.png`` beside summary.md)."""
    caption: str
    """Caption shown under it."""
    png: bytes
    """The PNG bytes."""


def esc(x: object) -> str:
    """HTML-escape any value's ``str`` (quotes included)."""
    return html.escape(str(x), quote=True)


def _fmt(x: object, nd: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(c: object) -> str:
        return _fmt(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _visible(token: object) -> str:
    """Token text with line breaks and tabs shown as symbols, so a context stays on one line."""
    return str(token).replace("\r", "").replace("\n", "⏎").replace("\t", "→")


def _context_html(ctx: Mapping) -> str:
    toks = [_visible(t) for t in ctx.get("tokens") or []]
    target = ctx.get("target", -1)
    parts = [f"<mark>{esc(t)}</mark>" if i == target else esc(t) for i, t in enumerate(toks)]
    act = ctx.get("activation")
    return f"<div class='ctx'>{''.join(parts)}</div>" + (f"<span class='muted'>act {act:.2f}</span>" if act is not None else "")


def _context_md(ctx: Mapping) -> str:
    toks = ctx.get("tokens") or []
    target = ctx.get("target", -1)
    s = "".join(f"[[{t}]]" if i == target else t for i, t in enumerate(toks))
    return "`" + s.replace("`", "'").replace("\n", "⏎") + "`"


class Sections:
    """Collects the report's sections once, then renders them as HTML and as Markdown."""

    def __init__(self, res: Mapping):
        self.res = res
        self.figures: list[FigureFile] = []
        self.html: list[str] = []
        self.md: list[str] = []

    def heading(self, title: str) -> None:
        self.html.append(f"<h2>{esc(title)}</h2>")
        self.md.append(f"## {title}")

    def para(self, text: str) -> None:
        self.html.append(f"<p>{esc(text)}</p>")
        self.md.append(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        if rows:
            self.html.append(_table(header, rows))
            self.md.append(_md_table(header, rows))

    def figure(self, name: str, caption: str, draw: Callable[[], bytes]) -> None:
        png = draw()
        self.figures.append(FigureFile(name, caption, png))
        b64 = base64.b64encode(png).decode("ascii")
        self.html.append(f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{b64}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
        self.md.append(f"![{caption}](figures/{name}.png)\n\n*{caption}*")


def _slug(*parts: object) -> str:
    return "_".join("".join(ch if ch.isalnum() else "-" for ch in str(p)) for p in parts)


def build(res: Mapping) -> Sections:
    """Lay out every section of the report from validated results."""
    S = Sections(res)
    S.heading("Summary")
    items = findings(res)
    S.html.append("<ul class='summary'>" + "".join(f"<li>{esc(t)}</li>" for t in items) + "</ul>")
    S.md.append("\n".join(f"- {t}" for t in items))

    S.heading("Models and corpus")
    S.table(["model", "architecture", "role", "layers", "d_model", "parameters", "source", "fingerprint"],
            [[m["name"], m["arch"], m.get("role", "model"), m.get("n_layers", ""), m.get("d_model", ""),
              f"{m['n_params']:,}" if m.get("n_params") else "", m.get("path", ""), m.get("fingerprint", "")]
             for m in res["models"]])
    corpus = res["corpus"]
    S.table(["corpus", "tokens", "fingerprint", "source"],
            [[corpus.get("name", ""), f"{corpus['n_tokens']:,}" if corpus.get("n_tokens") else "", corpus.get("fingerprint", ""),
              corpus.get("source", "")]])
    if res.get("dictionaries"):
        d = res["dictionaries"]
        S.table(list(d.keys()), [[d[k] for k in d]])
    env = res["environment"]
    S.table(["item", "value"], [[k, env[k]] for k in sorted(env)])

    pairs = res.get("pairs") or []
    S.heading("Feature universality: MPPC per pair")
    if pairs:
        S.para("MPPC is each feature's largest Pearson correlation with any feature of the other model over the same tokens. "
               "The random-init floor pairs a dictionary with one trained on an untrained copy; skylines pair it with another "
               "dictionary seed or another model seed of the same architecture.")
        rows = []
        for p in pairs:
            rows.append([f"{p['a']} → {p['b']}", p.get("layer_a", ""), p.get("layer_b", ""), p["a_to_b"]["mean"],
                         f"{p['a_to_b']['ci'][0]:.3f}–{p['a_to_b']['ci'][1]:.3f}", p["a_to_b"]["median"],
                         p["a_to_b"]["frac_above"].get("0.7", ""), p["a_to_b"]["n"]])
            if p.get("b_to_a"):
                s = p["b_to_a"]
                rows.append([f"{p['b']} → {p['a']}", p.get("layer_b", ""), p.get("layer_a", ""), s["mean"],
                             f"{s['ci'][0]:.3f}–{s['ci'][1]:.3f}", s["median"], s["frac_above"].get("0.7", ""), s["n"]])
            for label, s in (p.get("references") or {}).items():
                if s:
                    rows.append([f"  {label}", "", "", s["mean"], f"{s['ci'][0]:.3f}–{s['ci'][1]:.3f}", s["median"],
                                 s["frac_above"].get("0.7", ""), s["n"]])
        S.table(["direction / reference", "layer", "other layer", "mean", "95% CI", "median", "frac > 0.7", "live features"], rows)
        S.figure("mppc_means", "Mean MPPC per pair with the floor and skylines (error bars: 95% CI).", lambda: F.mppc_means(pairs))
        for p in pairs:
            S.figure(_slug("mppc", p["a"], p["b"]), f"MPPC distribution, {p['a']} vs {p['b']}, against floor and skylines.",
                     lambda p=p: F.mppc_distribution(p))
    else:
        S.para("No pairwise comparison in this run.")

    grids = [p for p in pairs if p.get("grid")]
    if grids:
        S.heading("Depth correspondence: layer × layer")
        for p in grids:
            S.figure(_slug("grid", p["a"], p["b"]), f"{p['grid'].get('stat', 'mean')} MPPC for every layer pair of {p['a']} and {p['b']}.",
                     lambda p=p: F.layer_grid(p))

    matched = [p for p in pairs if p.get("top_matches")]
    if matched:
        S.heading("Best-matched features and their top-activating contexts")
        for p in matched:
            S.html.append(f"<h3>{esc(p['a'])} ↔ {esc(p['b'])}</h3>")
            S.md.append(f"### {p['a']} ↔ {p['b']}")
            rows_h = []
            for m in p["top_matches"]:
                ctx = m.get("contexts") or {}
                left = "".join(_context_html(c) for c in ctx.get("a", []))
                right = "".join(_context_html(c) for c in ctx.get("b", []))
                rows_h.append(f"<tr><td>{esc(m['a_feature'])} ↔ {esc(m['b_feature'])}<br>r = {m['r']:.3f}</td>"
                              f"<td>{left}</td><td>{right}</td></tr>")
                S.md.append(f"- **{p['a']}#{m['a_feature']} ↔ {p['b']}#{m['b_feature']}** (r = {m['r']:.3f}): "
                            f"{p['a']}: {' · '.join(_context_md(c) for c in ctx.get('a', [])[:2])}; "
                            f"{p['b']}: {' · '.join(_context_md(c) for c in ctx.get('b', [])[:2])}")
            S.html.append(f"<table><thead><tr><th>features</th><th>{esc(p['a'])}</th><th>{esc(p['b'])}</th></tr></thead>"
                          f"<tbody>{''.join(rows_h)}</tbody></table>")

    fam = res.get("families")
    if fam and fam.get("n_families"):
        S.heading("N-way feature families")
        S.para(f"Features grouped into families by mutual best matches above r = {fam.get('threshold', '?')}, connected across "
               f"{', '.join(fam['hosts'])}.")
        S.table(["hosts in family", "families"], [[k, fam["by_size"][k]] for k in sorted(fam["by_size"], key=int)])
        S.figure("families", "How many feature families span 1, 2, ... hosts.", lambda: F.family_sizes(fam))
        if fam.get("examples"):
            with_r = any("mean_r" in e for e in fam["examples"])
            S.para("Examples of families present in every host (feature indices of each host's dictionary):")
            S.table(["family"] + list(fam["hosts"]) + (["mean r"] if with_r else []),
                    [[i] + [e["members"].get(h, "—") for h in fam["hosts"]] + ([e.get("mean_r", "")] if with_r else [])
                     for i, e in enumerate(fam["examples"])])

    so = res.get("seed_overlap") or []
    S.heading("Seed stability of dictionaries")
    if so:
        S.table(["model", "hook", "kind", "latents", "k", "seeds", "shared fraction", "± (seed pairs)", "assignments agree"],
                [[e["model"], e.get("hook", ""), e["kind"], e.get("n_latents", ""), e.get("k", "") or "",
                  ",".join(str(s) for s in e.get("seeds", [])), e["shared_fraction"], e.get("shared_fraction_std", ""),
                  e.get("agreement", "")] for e in so])
        if any(e.get("curve") for e in so):
            S.figure("seed_overlap_curve", "Shared fraction of latents against the cosine threshold.", lambda: F.seed_overlap_curves(so))
        if any(e.get("n_seed_hist") for e in so):
            S.figure("seed_histogram", "In how many seeds each latent of seed 0 reappears.", lambda: F.seed_histogram(so))
    else:
        S.para("No seed-stability study in this run.")

    ind = [e for e in (res.get("induction") or []) if e.get("layer_scores")]
    S.heading("Induction localization")
    if ind:
        S.figure("induction_layers", "Per-layer induction score of each model.", lambda: F.induction_heatmap(ind))
        for e in ind:
            if e.get("components"):
                S.figure(_slug("induction", e["model"]), f"{e['model']}: components ranked by patching effect.",
                         lambda e=e: F.component_effects(e))
    else:
        S.para("No induction analysis in this run.")

    wl = [e for e in (res.get("write_lag") or []) if e.get("layers")]
    S.heading("Off-by-One: write-lag profiles")
    if wl:
        S.para("For each layer: how strongly replacing the token at position s changes the layer's memory write at s+δ, normalised to sum to 1.")
        S.figure("write_lag", "Write-lag profile per layer and architecture.", lambda: F.write_lag_profiles(wl))
        S.table(["model", "architecture"] + [f"layer {i}" for i in range(max(len(e["layers"]) for e in wl))],
                [[e["model"], e.get("arch", "")] + [f"peak δ={layer['peak']}" for layer in e["layers"]] for e in wl])
    else:
        S.para("No write-lag analysis in this run.")

    if res.get("timings"):
        S.heading("Run")
        S.table(["stage", "seconds", "status"], [[k, v.get("seconds", ""), v.get("status", "")] if isinstance(v, dict) else [k, v, ""]
                                                 for k, v in res["timings"].items()])
    return S


def to_html(res: Mapping, S: Sections) -> str:
    """The whole page as one string (UTF-8, self-contained)."""
    title = esc(res["title"])
    sub = esc(f"universality {res['environment'].get('universality', '?')} · created {res.get('created', '')}")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{title}</title><style>{_CSS}</style></head><body>"
            f"<h1>{title}</h1><p class='muted'>{sub}</p>" + "\n".join(S.html) + "</body></html>\n")


def to_markdown(res: Mapping, S: Sections) -> str:
    """The summary document (figures referenced as ``figures/<name>.png``)."""
    head = f"# {res['title']}\n\n_universality {res['environment'].get('universality', '?')}, created {res.get('created', '')}_\n"
    return head + "\n\n" + "\n\n".join(S.md) + "\n"
