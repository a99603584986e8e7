"""Graphs of two architectures side by side: shared influence through MPPC partners, and the induction shape.

* :func:`partner_share`: the share of graph A's feature influence carried by features whose MPPC
  partner (the most correlated latent of B's dictionaries, over shared tokens) is itself a kept
  feature node of graph B.
* :func:`induction_shape`: on the induction prompt ``... A B ... A`` (earlier copy of the last token at
  position ``s``), whether the pruned graph has a *previous-token step* (a kept edge from position
  ``s`` into position ``s + 1``) and a *copy step* (a kept edge from position ``s + 1`` into the last
  position), and whether one node at ``s + 1`` carries both (the chain).

With frozen attention patterns the query-key side of a Transformer's induction (K-composition) is
not part of any graph: the previous-token step is visible only where it flows through values
(OV) — and through Mamba's conv / RWKV's token shift, which stay linear and so stay visible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .graph import Graph


@dataclass
class InductionShape:
    """The steps of the induction circuit found in one pruned graph."""

    previous_token_step: bool
    """A kept edge from position s into position s+1."""
    copy_step: bool
    """A kept edge from position s+1 into the last position (a feature there, or a logit)."""
    chained: bool
    """One node at s+1 receives a previous-token edge and sends a copy edge."""
    copy_share: float
    """Share of the logits' influence carried by nodes at position s+1."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def induction_shape(graph: Graph, source: int, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> InductionShape:
    """The :class:`InductionShape` of ``graph`` whose last token's earlier copy sits at ``source``."""
    kept = graph.prune(node_threshold, edge_threshold)
    pos = torch.tensor([graph.node(i).pos for i in range(graph.n_nodes)])
    last = graph.n_pos - 1
    e = kept.edge_mask
    into_next = e & (pos[:, None] == source + 1) & (pos[None, :] == source)
    copy = e & (pos[:, None] == last) & (pos[None, :] == source + 1)
    chained = bool((into_next.any(1) & copy.any(0)).any())
    infl = graph.node_influence()
    total = float(infl.sum())
    share = float(infl[(pos == source + 1) & kept.node_mask].sum() / total) if total > 0 else 0.0
    return InductionShape(bool(into_next.any()), bool(copy.any()), chained, share)


def partner_share(graph_a: Graph, graph_b: Graph, partners: torch.Tensor, n_latents_b: int,
                  node_threshold: float = 0.8, edge_threshold: float = 0.98, n_latents_a: int | None = None) -> float:
    """Share of A's kept-feature influence on features whose MPPC partner is a kept feature of B.

    ``partners`` ``[n_layers_a × n_latents_a]`` holds, for every latent of A (block-major), the index of its
    partner among B's latents (block-major, ``n_latents_b`` per block), or -1 when it has none.
    """
    kept_a, kept_b = graph_a.prune(node_threshold, edge_threshold), graph_b.prune(node_threshold, edge_threshold)
    in_b = {(int(l_), int(f)) for i, (l_, _, f) in enumerate(graph_b.features.tolist()) if kept_b.node_mask[i]}
    n_lat_a = n_latents_a if n_latents_a is not None else partners.shape[0] // graph_a.n_layers
    infl = graph_a.node_influence()
    carried = total = 0.0
    for i, (layer, _, feat) in enumerate(graph_a.features.tolist()):
        if not kept_a.node_mask[i]:
            continue
        total += float(infl[i])
        p = int(partners[layer * n_lat_a + feat])
        if p >= 0 and (p // n_latents_b, p % n_latents_b) in in_b:
            carried += float(infl[i])
    return carried / total if total > 0 else 0.0
