"""The typed results.json ``explanations`` section (imports nothing heavy: results.py reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._records import require_keys


@dataclass
class ExplanationsResult:
    """Explanations of a run's dictionaries, their scores, and how explanations agree across models."""

    explainer: str
    """``"token-statistics"`` (offline) or ``"llm:<model>"``."""
    dictionaries: list[dict] = field(default_factory=list)
    """Per dictionary: name, model, hook, kind, n_latents, n_explained, n_skipped, and per scorer a summary
    (``n, mean, median, ci, frac_above, hist``) of balanced accuracy and the mean AUC."""
    cross: list[dict] = field(default_factory=list)
    """Per compared pair: a, b, swap (own / swap / random-control means of detection balanced accuracy),
    embedding (mean cosine of MPPC pairs and of random pairs, Hungarian agreement, Spearman rho with interval)."""
    browser: str | None = None
    """The feature browser page, relative to the run directory."""
    folder: str = "explain"
    """Folder (relative to the run directory) holding delphi's ``explanations/`` and ``scores/``."""
    missing: list[str] = field(default_factory=list)
    """What could not be computed, and why."""
    joint: dict | None = None
    """Partners through the run's joint dictionary: ``kind``, ``models``, ``note`` (why there are none) and ``summary``
    per model (``n_latents``, ``mean_best_cosine``, ``frac_matched`` at cosine ≥ ``threshold``, ``frac_matched_shared``)."""

    def to_dict(self) -> dict:
        """The results.json ``explanations`` object."""
        return {"explainer": self.explainer, "dictionaries": [dict(d) for d in self.dictionaries],
                "cross": [dict(c) for c in self.cross], "browser": self.browser, "folder": self.folder,
                "missing": list(self.missing), "joint": self.joint}

    @classmethod
    def from_dict(cls, d: dict) -> "ExplanationsResult":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("explainer", "dictionaries"), "explanations")
        return cls(d["explainer"], list(d["dictionaries"]), list(d.get("cross") or []), d.get("browser"),
                   d.get("folder", "explain"), list(d.get("missing") or []), d.get("joint"))
