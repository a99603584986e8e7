"""Best-matched features of each pair, their top-activating contexts side by side."""

from __future__ import annotations

from typing import Mapping

from ..page import Page, context_html, context_md, esc
from .base import Section, register


class TopMatches(Section):
    """The ``top_matches`` of each results.json pair."""

    key = "pairs"

    def render(self, res: Mapping, page: Page) -> None:
        """A table per pair: the two features, their r, and each side's contexts (no heading when no pair has matches)."""
        matched = [p for p in res.get("pairs") or [] if p.get("top_matches")]
        if not matched:
            return
        page.heading("Best-matched features and their top-activating contexts")
        for p in matched:
            page.html.append(f"<h3>{esc(p['a'])} ↔ {esc(p['b'])}</h3>")
            page.md.append(f"### {p['a']} ↔ {p['b']}")
            rows_h = []
            for m in p["top_matches"]:
                ctx = m.get("contexts") or {}
                left = "".join(context_html(c) for c in ctx.get("a", []))
                right = "".join(context_html(c) for c in ctx.get("b", []))
                rows_h.append(f"<tr><td>{esc(m['a_feature'])} ↔ {esc(m['b_feature'])}<br>r = {m['r']:.3f}</td>"
                              f"<td>{left}</td><td>{right}</td></tr>")
                page.md.append(f"- **{p['a']}#{m['a_feature']} ↔ {p['b']}#{m['b_feature']}** (r = {m['r']:.3f}): "
                               f"{p['a']}: {' · '.join(context_md(c) for c in ctx.get('a', [])[:2])}; "
                               f"{p['b']}: {' · '.join(context_md(c) for c in ctx.get('b', [])[:2])}")
            page.html.append(f"<table><thead><tr><th>features</th><th>{esc(p['a'])}</th><th>{esc(p['b'])}</th></tr></thead>"
                             f"<tbody>{''.join(rows_h)}</tbody></table>")


register(TopMatches())
