"""Typed records of the ``circuit`` command for ``results.json`` (plain JSON in, plain JSON out)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..._records import require_keys


@dataclass
class GraphSummary:
    """One model's attribution graph, as the report shows it."""

    model: str
    """Label of the model."""
    arch: str
    """Its architecture."""
    prompt: list[str]
    """The prompt, token by token."""
    targets: list[str]
    """The target logits' tokens (most probable first)."""
    target_probabilities: list[float]
    """Their probabilities under the model."""
    n_active_features: int
    """Active features (all blocks and positions) = feature nodes before pruning."""
    n_kept_nodes: int
    """Nodes left by pruning (features, errors, tokens, logits)."""
    n_kept_features: int
    """Feature nodes left by pruning."""
    n_kept_edges: int
    """Edges left by pruning."""
    replacement_score: float
    """circuit-tracer's replacement score of the unpruned graph."""
    completeness_score: float
    """circuit-tracer's completeness score of the unpruned graph."""
    frozen_logit_error: float
    """max |host logit − replacement-model logit| over the targets."""
    seconds: float
    """Wall time of the graph (transcoders excluded)."""
    top_path: list[str] = field(default_factory=list)
    """The path followed back from the top logit along the largest direct effects, as node ids."""
    induction: dict | None = None
    """For the induction task: :class:`~.compare.InductionShape` as a dict, plus the answer's rank and probability."""
    graph_file: str = ""
    """The pruned graph in circuit-tracer's JSON format, relative to the run directory."""
    svg: str = ""
    """The pruned graph drawn as SVG."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GraphSummary":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("model", "arch", "prompt", "targets", "replacement_score"), "circuit graph")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class GraphComparison:
    """Two models' graphs lined up through MPPC partners of their transcoder latents."""

    model_a: str
    model_b: str
    share_a_in_b: float
    """Share of A's kept-feature influence on features whose MPPC partner is a kept feature of B's graph."""
    share_b_in_a: float
    """The same from B's side."""
    same_shape: bool | None = None
    """Induction task: both graphs have (or both lack) the previous-token → copy chain."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GraphComparison":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("model_a", "model_b", "share_a_in_b", "share_b_in_a"), "circuit comparison")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class CircuitGraphsResult:
    """results.json ``circuit_graphs``: every model's graph and every pairwise comparison."""

    task: str
    """``"induction"`` or ``"prompt"``."""
    graphs: list[GraphSummary] = field(default_factory=list)
    comparisons: list[GraphComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Plain sentences about what could not be compared, or what the graphs show."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"task": self.task, "graphs": [g.to_dict() for g in self.graphs],
                "comparisons": [c.to_dict() for c in self.comparisons], "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict) -> "CircuitGraphsResult":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("task", "graphs"), "circuit graphs")
        return cls(d["task"], [GraphSummary.from_dict(g) for g in d["graphs"]],
                   [GraphComparison.from_dict(c) for c in d.get("comparisons") or []], list(d.get("notes") or []))
