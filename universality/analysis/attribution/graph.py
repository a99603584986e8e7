"""The typed result of an attribution: nodes, direct-effect adjacency, scores, and circuit-tracer's JSON.

Node order (circuit-tracer's): the active features sorted by (block, position, feature), then one
error node per (block, position) block-major, one token node per position, and the logit targets.
``adjacency[target, source]`` is the direct effect of ``source`` on ``target``: the source's value
times the gradient of the target along the frozen replacement model. Rows are filled for features
and logits (targets); rows of error and token nodes are zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..._errors import UniversalityError
from ..._io import atomic_save_tensors, atomic_write_json, load_tensors
from .prune import Pruned, graph_scores, prune

_TENSORS = ("features", "activations", "error_norms", "logit_tokens", "logit_probabilities", "adjacency", "target_values",
            "constants")
_FIELDS = ("model", "arch", "host_fingerprint", "n_layers", "prompt_tokens", "prompt_strings", "frozen_logit_error",
           "settings")


@dataclass
class Node:
    """One node of a graph, as a plain record."""

    index: int
    """Row/column of the adjacency matrix."""
    kind: str
    """``"feature"``, ``"error"``, ``"token"`` or ``"logit"``."""
    layer: int
    """Block (features, errors); -1 for tokens; ``n_layers`` for logits."""
    pos: int
    """Prompt position (logits: the last one)."""
    feature: int
    """Dictionary latent (features), vocabulary id (tokens, logits), -1 for errors."""
    value: float
    """Activation (features), probability (logits), norm of the error or embedding vector."""

    @property
    def node_id(self) -> str:
        """circuit-tracer's ``node_id``: ``layer_feature_pos``, ``layer_-1_pos`` (errors), ``E_token_pos``, ``L+1_token_pos``."""
        if self.kind == "token":
            return f"E_{self.feature}_{self.pos}"
        if self.kind == "logit":
            return f"{self.layer + 1}_{self.feature}_{self.pos}"
        return f"{self.layer}_{self.feature}_{self.pos}"


@dataclass
class Graph:
    """An attribution graph over one prompt (see the module docstring for the layout).

    Attributes:
        model: a label of the host (its path or name).
        arch: ``"transformer"``, ``"mamba"`` or ``"rwkv"``.
        host_fingerprint: the host's fingerprint.
        n_layers: blocks of the host.
        prompt_tokens: token ids ``[t]``.
        prompt_strings: their decoded text (empty strings without a tokenizer).
        features: ``[n_features, 3]`` long: (block, position, latent) of each feature node.
        activations: ``[n_features]`` their clean activations.
        error_norms: ``[n_layers, t]`` norm of every error node's vector.
        logit_tokens: ``[n_logits]`` vocabulary ids of the target logits.
        logit_probabilities: ``[n_logits]`` their probabilities under the host.
        adjacency: ``[n_nodes, n_nodes]`` direct effects (target row, source column).
        target_values: ``[n_nodes]`` each target's value in the replacement model (feature pre-activation,
            logit); NaN for non-target nodes.
        constants: ``[n_nodes]`` each target's bias part: value − Σ incoming direct effects (NaN for non-targets).
        frozen_logit_error: max |host logits − replacement-model logits| over the target tokens (how exactly
            the frozen model with its error nodes reproduces the host).
        settings: how the graph was made (batch size, dtype, limits).
    """

    model: str
    arch: str
    host_fingerprint: str
    n_layers: int
    prompt_tokens: list[int]
    prompt_strings: list[str]
    features: torch.Tensor
    activations: torch.Tensor
    error_norms: torch.Tensor
    logit_tokens: torch.Tensor
    logit_probabilities: torch.Tensor
    adjacency: torch.Tensor
    target_values: torch.Tensor
    constants: torch.Tensor
    frozen_logit_error: float = 0.0
    settings: dict = field(default_factory=dict)

    # ----- layout -------------------------------------------------------------------------
    @property
    def n_pos(self) -> int:
        """Prompt length."""
        return len(self.prompt_tokens)

    @property
    def n_features(self) -> int:
        """Number of feature nodes."""
        return int(self.features.shape[0])

    @property
    def n_errors(self) -> int:
        """Number of error nodes (``n_layers × n_pos``)."""
        return self.n_layers * self.n_pos

    @property
    def n_logits(self) -> int:
        """Number of logit targets."""
        return int(self.logit_tokens.shape[0])

    @property
    def n_nodes(self) -> int:
        """All nodes."""
        return self.n_features + self.n_errors + self.n_pos + self.n_logits

    def error_index(self, layer: int, pos: int) -> int:
        """Node index of the error node of block ``layer`` at ``pos``."""
        return self.n_features + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        """Node index of the token at ``pos``."""
        return self.n_features + self.n_errors + pos

    def logit_index(self, k: int) -> int:
        """Node index of the ``k``-th logit target."""
        return self.n_features + self.n_errors + self.n_pos + k

    def feature_index(self, layer: int, pos: int, feature: int) -> int:
        """Node index of an active feature; -1 when it is not a node."""
        hit = ((self.features[:, 0] == layer) & (self.features[:, 1] == pos) & (self.features[:, 2] == feature)).nonzero()
        return int(hit[0, 0]) if len(hit) else -1

    def node(self, index: int) -> Node:
        """The :class:`Node` at adjacency index ``index``."""
        nf, ne, t = self.n_features, self.n_errors, self.n_pos
        if index < nf:
            layer, pos, feat = self.features[index].tolist()
            return Node(index, "feature", layer, pos, feat, float(self.activations[index]))
        if index < nf + ne:
            layer, pos = divmod(index - nf, t)
            return Node(index, "error", layer, pos, -1, float(self.error_norms[layer, pos]))
        if index < nf + ne + t:
            pos = index - nf - ne
            return Node(index, "token", -1, pos, int(self.prompt_tokens[pos]), 0.0)
        k = index - nf - ne - t
        return Node(index, "logit", self.n_layers, t - 1, int(self.logit_tokens[k]), float(self.logit_probabilities[k]))

    def logit_weights(self) -> torch.Tensor:
        """``[n_nodes]``: the logit targets' probabilities on their nodes, zero elsewhere."""
        w = torch.zeros(self.n_nodes, dtype=torch.float64)
        w[self.n_nodes - self.n_logits:] = self.logit_probabilities.to(torch.float64)
        return w

    # ----- analysis -----------------------------------------------------------------------
    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
        """circuit-tracer's pruning (see :mod:`.prune`)."""
        return prune(self.adjacency, self.logit_weights(), self.n_features, self.n_pos, self.n_logits,
                     node_threshold, edge_threshold)

    def scores(self) -> tuple[float, float]:
        """(replacement score, completeness score) of the unpruned graph."""
        return graph_scores(self.adjacency, self.logit_weights(), self.n_features, self.n_errors, self.n_pos)

    def node_influence(self) -> torch.Tensor:
        """``[n_nodes]`` each node's influence on the weighted logits (normalised adjacency, all path lengths)."""
        from .prune import influence, normalize_rows

        return influence(normalize_rows(self.adjacency), self.logit_weights())

    def top_path(self, start: int | None = None) -> list[int]:
        """Node indices of the path found by walking back from a logit (default: the top one) along the
        largest |direct effect| into each node, until a node without incoming edges (a token or error)."""
        node = self.logit_index(0) if start is None else start
        path = [node]
        while bool(self.adjacency[node].any()):
            node = int(self.adjacency[node].abs().argmax())
            path.append(node)
        return path

    # ----- files --------------------------------------------------------------------------
    def save(self, folder) -> Path:
        """Write ``graph.safetensors`` (the tensors) and ``graph.json`` (the rest) into ``folder`` (atomic writes)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(folder / "graph.safetensors", {k: getattr(self, k).contiguous() for k in _TENSORS})
        atomic_write_json(folder / "graph.json", {k: getattr(self, k) for k in _FIELDS})
        return folder

    @classmethod
    def load(cls, folder) -> "Graph":
        """Read a graph written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / "graph.json").is_file() or not (folder / "graph.safetensors").is_file():
            raise UniversalityError(f"'{folder}' holds no saved attribution graph (graph.json and graph.safetensors)")
        meta = json.loads((folder / "graph.json").read_text())
        return cls(**{k: meta[k] for k in _FIELDS}, **load_tensors(folder / "graph.safetensors"))

    # ----- export -------------------------------------------------------------------------
    def to_json(self, node_threshold: float = 0.8, edge_threshold: float = 0.98, slug: str = "graph",
                scan: str | None = None) -> dict[str, Any]:
        """The pruned graph in circuit-tracer's graph-file format (``metadata``, ``qParams``, ``nodes``, ``links``).

        Feature nodes carry ``feature_type`` ``"cross layer transcoder"`` (what circuit-tracer's frontend expects
        for every dictionary feature), error nodes ``"mlp reconstruction error"``, tokens ``"embedding"`` and
        logits ``"logit"``; ``feature`` of a feature node is the Cantor pairing of (layer, latent).
        """
        kept = self.prune(node_threshold, edge_threshold)
        nodes = {i: self._json_node(i, float(kept.cumulative[i])) for i in kept.node_mask.nonzero().flatten().tolist()}
        dst, src = kept.edge_mask.nonzero(as_tuple=True)
        links = [{"source": nodes[s]["node_id"], "target": nodes[d]["node_id"], "weight": float(self.adjacency[d, s])}
                 for d, s in zip(dst.tolist(), src.tolist()) if s in nodes and d in nodes]
        linked = {ln["source"] for ln in links} | {ln["target"] for ln in links}
        used = [n for n in nodes.values() if n["node_id"] in linked or n["feature_type"] in ("embedding", "logit")]
        meta = {"slug": slug, "scan": scan or f"universality-{self.host_fingerprint}", "transcoder_list": [],
                "prompt_tokens": list(self.prompt_strings), "prompt": "".join(self.prompt_strings),
                "node_threshold": node_threshold, "schema_version": 1,
                "info": {"arch": self.arch, "model": self.model, "generator": "universality"}}
        qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
        return {"metadata": meta, "qParams": qparams, "nodes": used, "links": links}

    def _json_node(self, index: int, cumulative: float) -> dict[str, Any]:
        n = self.node(index)
        base = {"node_id": n.node_id, "ctx_idx": n.pos, "token_prob": 0.0, "is_target_logit": False, "run_idx": 0,
                "reverse_ctx_idx": 0, "clerp": "", "influence": cumulative, "activation": None}
        if n.kind == "feature":
            cantor = (n.layer + n.feature) * (n.layer + n.feature + 1) // 2 + n.feature
            return {**base, "feature": cantor, "layer": str(n.layer), "feature_type": "cross layer transcoder",
                    "jsNodeId": f"{n.layer}_{n.feature}-0", "activation": n.value}
        if n.kind == "error":
            return {**base, "feature": -1, "layer": str(n.layer), "feature_type": "mlp reconstruction error",
                    "jsNodeId": f"{n.layer}_-1-{n.pos}"}
        if n.kind == "token":
            return {**base, "feature": n.pos, "layer": "E", "feature_type": "embedding",
                    "jsNodeId": f"E_{n.feature}-{n.pos}"}
        k = index - self.logit_index(0)
        text = self.settings.get("logit_strings", [""] * self.n_logits)[k]
        return {**base, "feature": n.feature, "layer": str(self.n_layers + 1), "feature_type": "logit",
                "token_prob": n.value, "is_target_logit": k == 0, "jsNodeId": f"L_{n.feature}-{n.pos}",
                "clerp": f'Output "{text}" (p={n.value:.3f})', "influence": None}
