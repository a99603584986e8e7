"""An SVG drawing of a pruned attribution graph (for the report; no plotting library needed).

Columns are prompt positions, rows are blocks (tokens at the bottom, logits on top). Features
are circles, error nodes grey squares; an edge's width grows with |direct effect| and its colour
says the sign (blue positive, red negative).
"""

from __future__ import annotations

from html import escape

from .graph import Graph


def _text(s: str) -> str:
    """``s`` escaped for SVG text, ``=`` included (so no token can look like an attribute to a sanitiser)."""
    return escape(s).replace("=", "&#61;")


def render_svg(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98, max_edges: int = 400,
               width: int = 760) -> str:
    """The pruned ``graph`` as an SVG document string (the ``max_edges`` largest kept edges are drawn)."""
    kept = graph.prune(node_threshold, edge_threshold)
    t, L = graph.n_pos, graph.n_layers
    left, bottom, top = 60, 60, 40
    col = (width - left - 20) / max(t, 1)
    row = 46
    height = top + row * (L + 1) + bottom

    def place(i: int) -> tuple[float, float]:
        n = graph.node(i)
        level = {"token": 0, "logit": L + 1}.get(n.kind, n.layer + 1)
        x = left + col * (n.pos + 0.5)
        if n.kind in ("feature", "error"):
            x += (hash((n.kind, n.feature)) % 7 - 3) * col / 10
        if n.kind == "logit":
            x = left + col * (t - 0.5) - (i - graph.logit_index(0)) * 14
        return x, height - bottom - level * row

    dst, src = kept.edge_mask.nonzero(as_tuple=True)
    weights = graph.adjacency[dst, src]
    order = weights.abs().argsort(descending=True)[:max_edges]
    biggest = float(weights.abs().max()) if len(weights) else 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="10"><rect width="100%" height="100%" fill="white"/>']
    for level in range(L + 2):
        y = height - bottom - level * row
        label = "tokens" if level == 0 else ("logits" if level == L + 1 else f"block {level - 1}")
        parts.append(f'<text x="4" y="{y + 3:.1f}" fill="#555">{label}</text>')
    for k in order.tolist():
        d, s, w = int(dst[k]), int(src[k]), float(weights[k])
        (x1, y1), (x2, y2) = place(s), place(d)
        colour = "#2b6cb0" if w > 0 else "#c53030"
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                     f'stroke-opacity="0.6" stroke-width="{0.4 + 3.6 * abs(w) / biggest:.2f}"/>')
    for i in kept.node_mask.nonzero().flatten().tolist():
        n = graph.node(i)
        x, y = place(i)
        if n.kind == "feature":
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#f6ad55" stroke="#744210">'
                         f'<title>block {n.layer} feature {n.feature} @ {n.pos} (act {n.value:.3g})</title></circle>')
        elif n.kind == "error":
            parts.append(f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="#a0aec0">'
                         f'<title>error block {n.layer} @ {n.pos}</title></rect>')
        elif n.kind == "token":
            text = graph.prompt_strings[n.pos] if graph.prompt_strings else str(n.feature)
            parts.append(f'<text x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle">{_text(text.strip() or repr(text))}</text>'
                         f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#4a5568"/>')
        else:
            text = graph.settings.get("logit_strings", [""] * graph.n_logits)[i - graph.logit_index(0)]
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#38a169"><title>logit {_text(repr(text))} '
                         f'p={n.value:.3f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
