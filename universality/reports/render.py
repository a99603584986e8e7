"""Turn validated results into one self-contained ``report.html`` and a ``summary.md``.

The page is the plain-language summary followed by every registered section
(:mod:`universality.reports.sections`) in order. The HTML embeds every figure as a
base64 PNG, has inline CSS, no scripts and no external URL, so it opens offline and
shows the same everywhere. Every string that came from results passes through
:func:`html.escape`.
"""

from __future__ import annotations

from typing import Mapping

from .findings import findings
from .page import CSP, CSS, FigureFile, Page, esc
from .sections import registered

__all__ = ["CSP", "FigureFile", "Page", "build", "esc", "to_html", "to_markdown"]


def build(res: Mapping) -> Page:
    """Lay out the summary and every registered section from validated results."""
    page = Page(res)
    page.heading("Summary")
    items = findings(res)
    page.html.append("<ul class='summary'>" + "".join(f"<li>{esc(t)}</li>" for t in items) + "</ul>")
    page.md.append("\n".join(f"- {t}" for t in items))
    for section in registered():
        section.render(res, page)
    return page


def to_html(res: Mapping, page: Page) -> str:
    """The whole page as one string (UTF-8, self-contained)."""
    title = esc(res["title"])
    sub = esc(f"universality {res['environment'].get('universality', '?')} · created {res.get('created', '')}")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{title}</title><style>{CSS}</style></head><body>"
            f"<h1>{title}</h1><p class='muted'>{sub}</p>" + "\n".join(page.html) + "</body></html>\n")


def to_markdown(res: Mapping, page: Page) -> str:
    """The summary document (figures referenced as ``figures/<name>.png``)."""
    head = f"# {res['title']}\n\n_universality {res['environment'].get('universality', '?')}, created {res.get('created', '')}_\n"
    return head + "\n\n" + "\n\n".join(page.md) + "\n"
