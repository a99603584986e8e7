"""The page being built: headings, paragraphs, tables and figures collected once, then rendered as HTML and Markdown.

Every string that came from results passes through :func:`esc` (``html.escape``) on its way into the HTML.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""Content-Security-Policy of the page: nothing may be fetched; figures are data: URIs."""

CSS = """
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


def context_html(ctx: Mapping) -> str:
    """One top-activating context as HTML: escaped token texts, the active one marked, and its activation."""
    toks = [_visible(t) for t in ctx.get("tokens") or []]
    target = ctx.get("target", -1)
    parts = [f"<mark>{esc(t)}</mark>" if i == target else esc(t) for i, t in enumerate(toks)]
    act = ctx.get("activation")
    return f"<div class='ctx'>{''.join(parts)}</div>" + (f"<span class='muted'>act {act:.2f}</span>" if act is not None else "")


def context_md(ctx: Mapping) -> str:
    """One top-activating context as inline Markdown code, the active token in ``[[...]]``."""
    toks = ctx.get("tokens") or []
    target = ctx.get("target", -1)
    s = "".join(f"[[{t}]]" if i == target else t for i, t in enumerate(toks))
    return "`" + s.replace("`", "'").replace("\n", "⏎") + "`"


class Page:
    """Collects the report's sections once, then renders them as HTML and as Markdown."""

    def __init__(self, res: Mapping):
        self.res = res
        self.figures: list[FigureFile] = []
        self.html: list[str] = []
        self.md: list[str] = []

    def heading(self, title: str) -> None:
        """A section heading (``<h2>`` / ``##``)."""
        self.html.append(f"<h2>{esc(title)}</h2>")
        self.md.append(f"## {title}")

    def para(self, text: str) -> None:
        """A paragraph of plain text."""
        self.html.append(f"<p>{esc(text)}</p>")
        self.md.append(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table (nothing when ``rows`` is empty); floats shown with 3 decimals."""
        if rows:
            self.html.append(_table(header, rows))
            self.md.append(_md_table(header, rows))

    def figure(self, name: str, caption: str, draw: Callable[[], bytes]) -> None:
        """A figure drawn by ``draw()`` (PNG bytes): inline in the HTML, ``figures/<name>.png`` in the Markdown."""
        png = draw()
        self.figures.append(FigureFile(name, caption, png))
        b64 = base64.b64encode(png).decode("ascii")
        self.html.append(f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{b64}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
        self.md.append(f"![{caption}](figures/{name}.png)\n\n*{caption}*")


def slug(*parts: object) -> str:
    """A file stem from ``parts``: anything but letters and digits becomes ``-``, parts are joined by ``_``."""
    return "_".join("".join(ch if ch.isalnum() else "-" for ch in str(p)) for p in parts)




def csv_text(rows: list[list[object]]) -> str:
    """CSV text of ``rows`` (first row: the header), ``\\n`` line ends."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
