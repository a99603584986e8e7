"""Comparison reports: results.json → report.html (self-contained) + summary.md (+ figures/*.png, tables/*.csv).

The report reads only result files, never models or activations::

    from universality import reports
    files = reports.write_report("runs/demo")      # reads runs/demo/results.json
    files.html, files.markdown, files.figures

The results schema is described in ``docs/report.md``; :func:`example_results`
builds a synthetic, schema-complete one.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Mapping, NamedTuple

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_writable_dir
from .example import example_results
from .findings import findings
from .render import build, to_html, to_markdown
from .schema import SCHEMA, load_results, summarize_values, validate_results

__all__ = ["ReportFiles", "SCHEMA", "example_results", "findings", "load_results", "summarize_values",
           "validate_results", "write_report", "write_results"]


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


def _csv(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _tables(res: Mapping) -> dict[str, str]:
    out = {}
    rows = [["a", "b", "layer_a", "layer_b", "series", "n", "mean", "ci_low", "ci_high", "median", "frac_above_0.7"]]
    for p in res.get("pairs") or []:
        series = [("a_to_b", p["a_to_b"]), ("b_to_a", p.get("b_to_a"))] + list((p.get("references") or {}).items())
        for name, s in series:
            if s:
                rows.append([p["a"], p["b"], p.get("layer_a", ""), p.get("layer_b", ""), name, s["n"], s["mean"], s["ci"][0],
                             s["ci"][1], s["median"], s["frac_above"].get("0.7", "")])
    if len(rows) > 1:
        out["mppc.csv"] = _csv(rows)
    so = res.get("seed_overlap") or []
    if so:
        out["seed_overlap.csv"] = _csv([["model", "hook", "kind", "n_latents", "k", "seeds", "shared_fraction", "shared_fraction_std"]]
                                       + [[e["model"], e.get("hook", ""), e["kind"], e.get("n_latents", ""), e.get("k", ""),
                                           " ".join(map(str, e.get("seeds", []))), e["shared_fraction"],
                                           e.get("shared_fraction_std", "")] for e in so])
    wl = res.get("write_lag") or []
    if wl:
        out["write_lag.csv"] = _csv([["model", "arch", "layer", "peak", "effect"]]
                                    + [[e["model"], e.get("arch", ""), layer["layer"], layer["peak"],
                                        " ".join(f"{x:.4f}" for x in layer["effect"])] for e in wl for layer in e["layers"]])
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
    S = build(res)
    fig_paths = [atomic_write_bytes(run / "figures" / f"{f.name}.png", f.png) for f in S.figures]
    table_paths = [atomic_write_text(run / "tables" / name, text) for name, text in _tables(res).items()]
    md = atomic_write_text(run / "summary.md", to_markdown(res, S))
    html_path = atomic_write_text(run / "report.html", to_html(res, S))
    return ReportFiles(html_path, md, run / "results.json", fig_paths, table_paths)
