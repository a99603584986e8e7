"""Typed results of ``compare``: one pair of hosts, its layer grid, and the N-way families.

Each type converts to and from the results.json sections documented in docs/report.md
(``to_dict`` / ``from_dict`` round-trip exactly); per-direction summaries stay the plain
dicts of :func:`universality.reports.summarize_values`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._records import require_keys


@dataclass
class GridResult:
    """Mean MPPC A→B of every dictionary pair of a layer grid: ``values[i][j]`` for layers ``layers_a[i]``, ``layers_b[j]``."""

    layers_a: list[int]
    """Block indices of host A, ascending."""
    layers_b: list[int]
    """Block indices of host B, ascending."""
    values: list[list[float]]
    """[len(layers_a)][len(layers_b)] mean MPPC (0.0 where every feature was dead)."""
    stat: str = "mean"
    """Which summary each cell holds."""

    def to_dict(self) -> dict:
        """The results.json ``grid`` section."""
        return {"layers_a": list(self.layers_a), "layers_b": list(self.layers_b), "stat": self.stat,
                "values": [list(row) for row in self.values]}

    @classmethod
    def from_dict(cls, d: dict) -> "GridResult":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("layers_a", "layers_b", "values"), "grid")
        return cls(list(d["layers_a"]), list(d["layers_b"]), [list(r) for r in d["values"]], d.get("stat", "mean"))


@dataclass
class PairResult:
    """MPPC of one host pair at their middle layers, both ways, with reference lines, grid and example matches."""

    a: str
    """Label of host A."""
    b: str
    """Label of host B."""
    layer_a: int
    """Middle block of A."""
    layer_b: int
    """Middle block of B."""
    hook: str
    """Per-block hook kind compared (e.g. ``resid_post``)."""
    a_to_b: dict
    """Summary of every A feature's best r in B (``n, mean, median, ci, frac_above, hist``)."""
    b_to_a: dict
    """Same for B → A."""
    references: dict[str, dict] = field(default_factory=dict)
    """Reference line name (floor, skylines) → its A→B summary."""
    grid: GridResult | None = None
    """The layer×layer grid."""
    top_matches: list[dict] = field(default_factory=list)
    """Best-matched feature pairs with their top-activating contexts."""

    def to_dict(self) -> dict:
        """One entry of results.json ``pairs``."""
        return {"a": self.a, "b": self.b, "layer_a": self.layer_a, "layer_b": self.layer_b, "hook": self.hook,
                "a_to_b": self.a_to_b, "b_to_a": self.b_to_a, "references": self.references,
                "grid": self.grid.to_dict() if self.grid is not None else None, "top_matches": self.top_matches}

    @classmethod
    def from_dict(cls, d: dict) -> "PairResult":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("a", "b", "layer_a", "layer_b", "hook", "a_to_b", "b_to_a"), "pair")
        grid = GridResult.from_dict(d["grid"]) if d.get("grid") is not None else None
        return cls(d["a"], d["b"], int(d["layer_a"]), int(d["layer_b"]), d["hook"], d["a_to_b"], d["b_to_a"],
                   dict(d.get("references", {})), grid, list(d.get("top_matches", [])))


@dataclass
class FamiliesResult:
    """Features joined across N hosts by mutual best matches above a threshold."""

    hosts: list[str]
    """Labels of the hosts, in order."""
    threshold: float
    """Minimum r of a joining mutual best match."""
    n_families: int
    """Number of families (singletons included)."""
    by_size: dict[str, int]
    """``"m"`` → families present in exactly m hosts."""
    examples: list[dict] = field(default_factory=list)
    """A few families present in every host: ``{"members": {host: "#i #j"}}``."""

    def to_dict(self) -> dict:
        """The results.json ``families`` section."""
        return {"hosts": list(self.hosts), "threshold": self.threshold, "n_families": self.n_families,
                "by_size": dict(self.by_size), "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, d: dict) -> "FamiliesResult":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("hosts", "threshold", "n_families", "by_size"), "families")
        return cls(list(d["hosts"]), d["threshold"], int(d["n_families"]), dict(d["by_size"]), list(d.get("examples", [])))
