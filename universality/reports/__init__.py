"""Comparison reports: results.json → report.html (self-contained) + summary.md (+ figures/*.png, tables/*.csv).

The report reads only result files, never models or activations::

    from universality import reports
    files = reports.write_report("runs/demo")      # reads runs/demo/results.json
    files.html, files.markdown, files.figures

The results schema is described in ``docs/report.md``; :func:`example_results`
builds a synthetic, schema-complete one. Each part of the page is a :class:`Section`
(validate, render with figures, CSV tables, summary sentences) in a registry
(:mod:`universality.reports.sections`): adding an analysis is one module plus one section.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, NamedTuple

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_writable_dir
from .example import example_results
from .findings import findings
from .render import build, to_html, to_markdown
from .schema import SCHEMA, load_results, summarize_values, validate_results
from .sections import Section, register, registered

__all__ = ["ReportFiles", "SCHEMA", "Section", "example_results", "findings", "load_results", "register", "registered",
           "summarize_values", "validate_results", "write_report", "write_results"]


class ReportFiles(NamedTuple):
    """Paths written by :func:`write_report`."""

    html: Path
    """The self-contained report.html."""
    markdown: Path
    """summary.md (figures referenced from figures/)."""
    results: Path
    """results.json (kept as it was)."""
    figures: list[Path]
    """The PNG files under figures/."""
    tables: list[Path]
    """CSV tables under tables/."""


def write_results(run_dir: str | os.PathLike, results: Mapping) -> Path:
    """Validate ``results`` and write it atomically as ``run_dir/results.json``."""
    validate_results(dict(results))
    return atomic_write_json(Path(ensure_writable_dir(run_dir)) / "results.json", results)


def _tables(res: Mapping) -> dict[str, str]:
    """Every registered section's CSV tables: file name → text."""
    out: dict[str, str] = {}
    for section in registered():
        out.update(section.tables(res))
    return out


def write_report(run_dir: str | os.PathLike, results: Mapping | None = None) -> ReportFiles:
    """Render the report of a run directory.

    Args:
        run_dir: folder holding ``results.json`` (or receiving it when ``results`` is given).
        results: optional results dict; written as ``results.json`` first when given.

    Returns:
        :class:`ReportFiles` with the paths of report.html, summary.md, results.json, figures and tables.
        Every file is written atomically; figures go to ``figures/`` and tables to ``tables/``.
    """
    run = Path(ensure_writable_dir(run_dir))
    if results is not None:
        write_results(run, results)
    res = load_results(run)
    page = build(res)
    fig_paths = [atomic_write_bytes(run / "figures" / f"{f.name}.png", f.png) for f in page.figures]
    table_paths = [atomic_write_text(run / "tables" / name, text) for name, text in _tables(res).items()]
    md = atomic_write_text(run / "summary.md", to_markdown(res, page))
    html_path = atomic_write_text(run / "report.html", to_html(res, page))
    return ReportFiles(html_path, md, run / "results.json", fig_paths, table_paths)
