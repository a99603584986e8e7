"""The typed ``results.json`` of a run: what the commands write and the report reads (schema in ``docs/report.md``).

A command assembles one :class:`RunResults` from the typed records the library returns
(:class:`~universality.matching.SeedOverlapResult`, :class:`~universality.analysis.InductionSummary`,
:class:`~universality.analysis.WriteLagResult`, the compare pairs and families) and writes
:meth:`RunResults.to_dict`. This module imports nothing heavy, so both ``jobs`` and ``reports`` can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._errors import UniversalityError

SCHEMA = "universality.results/1"
"""Version tag stored under ``"schema"`` in every results.json."""


def check_schema(tag: Any, where: str = "results.json") -> None:
    """One sentence when ``tag`` is not the schema this version reads (e.g. a run directory from another version)."""
    if tag != SCHEMA:
        raise UniversalityError(f"{where} was written with schema {tag!r} but this version of universality reads '{SCHEMA}'; "
                                "rerun the command that made it to rewrite it")


def plain(x: Any) -> Any:
    """A record's ``to_dict()``, or ``x`` itself when it already is plain JSON data."""
    return x.to_dict() if hasattr(x, "to_dict") else x


@dataclass
class RunResults:
    """Everything a run reports. Sections a command did not run stay empty (lists) or ``None`` (and are then left out)."""

    title: str
    """Page title of the report."""
    created: str
    """UTC time the results were assembled, ISO 8601."""
    environment: dict
    """Versions and hardware: universality, python, torch, transformers, numpy, platform, cpu_count, device, gpu."""
    corpus: dict
    """The tokens every statistic comes from: name, source, fingerprint, n_tokens, n_documents."""
    models: list[dict] = field(default_factory=list)
    """One ``{name, arch, role, n_layers, d_model, n_params, path, fingerprint}`` per host."""
    pairs: list[Any] = field(default_factory=list)
    """Compared host pairs (:class:`~universality.jobs.compare_results.PairResult`, or its dict as a stage recorded it)."""
    families: Any = None
    """N-way feature families (a ``FamiliesResult`` or its dict); written whenever pairs were compared."""
    dictionaries: dict | None = None
    """Settings of the compared dictionaries: hook, kind, n_latents, k, epochs."""
    seed_overlap: list[Any] = field(default_factory=list)
    """:class:`~universality.matching.SeedOverlapResult` per kind and size."""
    induction: list[Any] = field(default_factory=list)
    """:class:`~universality.analysis.InductionSummary` per host."""
    write_lag: list[Any] = field(default_factory=list)
    """:class:`~universality.analysis.WriteLagResult` per host."""
    missing: list[str] = field(default_factory=list)
    """Stages that could not run, and why."""
    config: dict | None = None
    """Resolved settings of the command."""
    zoo: dict | None = None
    """Zoo preset and its members' losses (the demo)."""
    timings: dict | None = None
    """Stage name → ``{seconds, status, peak_rss_mib}`` of this invocation (peak RSS only for stages that ran)."""
    schema: str = SCHEMA
    """Schema tag (:data:`SCHEMA`)."""
    circuit_graphs: Any = None
    """Attribution graphs per model and their comparisons (a ``CircuitGraphsResult`` or its dict); ``circuit`` only."""
    paper_findings: list[Any] = field(default_factory=list)
    """:class:`~universality.analysis.PaperFindings` per host: the paper's Mamba circuit findings tested on it (the demo)."""
    evaluations: list[Any] = field(default_factory=list)
    """:class:`~universality.sae.Evaluation` per evaluated dictionary (``universality eval``); written only when non-empty."""
    explanations: Any = None
    """Feature explanations and their scores (:class:`~universality.interp.records.ExplanationsResult` or its dict)."""
    lens_steer: dict | None = None
    """Lenses and steering: ``{"lens": [LensResult dicts], "steering": [DoseResponse dicts]}`` (docs/lens-steering.md)."""
    joint: dict | None = None
    """Joint dictionary over the compared hosts (``compare --joint``; see docs/joint.md), or ``None``."""
    induction_match: list[Any] = field(default_factory=list)
    """:class:`~universality.analysis.InductionMatch` per host pair: the induction rows of the depth map (the demo)."""

    def __post_init__(self):
        check_schema(self.schema)

    def to_dict(self) -> dict:
        """The results.json object, keys in the documented order; optional sections left out when ``None``."""
        out: dict[str, Any] = {"schema": self.schema, "title": self.title, "created": self.created,
                               "environment": dict(self.environment), "corpus": dict(self.corpus),
                               "models": [dict(m) for m in self.models], "pairs": [plain(p) for p in self.pairs]}
        if self.pairs or self.families is not None:
            out["families"] = plain(self.families)
        if self.dictionaries is not None:
            out["dictionaries"] = dict(self.dictionaries)
        out["seed_overlap"] = [plain(e) for e in self.seed_overlap]
        out["induction"] = [plain(e) for e in self.induction]
        out["write_lag"] = [plain(e) for e in self.write_lag]
        if self.paper_findings:
            out["paper_findings"] = [plain(e) for e in self.paper_findings]
        out["missing"] = list(self.missing)
        for key in ("config", "zoo", "timings", "lens_steer", "joint"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.circuit_graphs is not None:
            out["circuit_graphs"] = plain(self.circuit_graphs)
        if self.evaluations:
            out["evaluations"] = [plain(e) for e in self.evaluations]
        if self.explanations is not None:
            out["explanations"] = plain(self.explanations)
        if self.induction_match:
            out["induction_match"] = [plain(e) for e in self.induction_match]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RunResults":
        """Inverse of :meth:`to_dict`: every section entry comes back as its typed record."""
        from .analysis.induction import InductionSummary
        from .analysis.induction_match import InductionMatch
        from .analysis.paper_findings import PaperFindings
        from .analysis.write_lag import WriteLagResult
        from .interp.records import ExplanationsResult
        from .jobs.compare_results import FamiliesResult, PairResult
        from .matching.seeds import SeedOverlapResult

        if not isinstance(d, dict):
            raise UniversalityError("results.json must hold a JSON object at the top level")
        check_schema(d.get("schema"))
        missing = [k for k in ("title", "environment", "corpus", "models") if k not in d]
        if missing:
            raise UniversalityError(f"results.json lacks {', '.join(missing)}; it must follow schema {SCHEMA} (see docs/report.md)")
        fam = d.get("families")
        return cls(d["title"], d.get("created", ""), d["environment"], d["corpus"], list(d["models"]),
                   [PairResult.from_dict(p) for p in d.get("pairs") or []], None if fam is None else FamiliesResult.from_dict(fam),
                   d.get("dictionaries"),
                   [SeedOverlapResult.from_dict(e) for e in d.get("seed_overlap") or []],
                   [InductionSummary.from_dict(e) for e in d.get("induction") or []],
                   [WriteLagResult.from_dict(e) for e in d.get("write_lag") or []],
                   list(d.get("missing") or []), d.get("config"), d.get("zoo"), d.get("timings"), d["schema"],
                   circuit_graphs=_circuit_graphs(d.get("circuit_graphs")),
                   paper_findings=[PaperFindings.from_dict(e) for e in d.get("paper_findings") or []],
                   evaluations=[_evaluation(e) for e in d.get("evaluations") or []],
                   explanations=None if d.get("explanations") is None else ExplanationsResult.from_dict(d["explanations"]),
                   lens_steer=d.get("lens_steer"), joint=d.get("joint"),
                   induction_match=[InductionMatch.from_dict(e) for e in d.get("induction_match") or []])


def _circuit_graphs(d: Any) -> Any:
    """The ``circuit_graphs`` record of a results dict (``None`` when absent)."""
    if d is None:
        return None
    from .analysis.attribution.records import CircuitGraphsResult

    return CircuitGraphsResult.from_dict(d)


def _evaluation(d: dict) -> Any:
    """An ``evaluations`` entry as its typed record."""
    from .sae.evaluation import Evaluation

    return Evaluation.from_dict(d)
