"""Influence, pruning and the graph scores, as circuit-tracer defines them.

Conventions: ``adjacency[target, source]`` holds direct effects; nodes are ordered
[features, errors (block-major), tokens, logits]; ``logit_weights`` [n_nodes] is zero except on
the logit nodes, where it holds their probabilities.

* Normalised matrix: ``|A|`` with each row divided by its sum (rows of zeros stay zero).
* Influence of every node on the logits: ``w A_n + w A_n² + ...`` (a finite sum: the graph is acyclic).
* Node pruning keeps the smallest set of nodes, by influence, that carries ``node_threshold`` of the
  total; tokens and logits are always kept. Edge pruning scores each edge of the node-pruned graph by
  ``A_n[t, s] · (influence(t) + w(t))`` and keeps ``edge_threshold`` of the total score; then feature and
  error nodes left without outgoing kept edges, and features left without incoming ones, are dropped,
  until nothing changes.
* Replacement score: the tokens' share of the influence that tokens and error nodes have.
  Completeness score: the influence-weighted mean share of each node's normalised input that
  does not come from error nodes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..._errors import UniversalityError


def normalize_rows(adjacency: torch.Tensor) -> torch.Tensor:
    """``|A|`` with rows scaled to sum to 1 (all-zero rows stay zero); ``[n, n]`` float64."""
    a = adjacency.abs().to(torch.float64)
    return a / a.sum(1, keepdim=True).clamp_min(1e-10)


def influence(normalized: torch.Tensor, logit_weights: torch.Tensor, max_iter: int = 10_000) -> torch.Tensor:
    """Total influence ``[n]`` of every node on the weighted logits through ``normalized`` (paths of every length ≥ 1)."""
    step = logit_weights.to(normalized.dtype) @ normalized
    total = step.clone()
    for _ in range(max_iter):
        if not bool(step.any()):
            return total
        step = step @ normalized
        total += step
    raise UniversalityError("the attribution graph has a cycle: influence did not settle")


def _threshold(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """The score above which the largest scores add up to ``keep`` of the total (zeros never count)."""
    flat = scores.flatten()
    ordered = torch.sort(flat[flat > 0], descending=True).values
    total = ordered.sum()
    if len(ordered) == 0 or total <= 0:
        return torch.tensor(float("inf"), dtype=scores.dtype)
    cumulative = torch.cumsum(ordered, 0) / total
    index = min(int(torch.searchsorted(cumulative, torch.tensor(keep, dtype=cumulative.dtype))), len(ordered) - 1)
    return ordered[index]


class Pruned(NamedTuple):
    """What :func:`prune` keeps."""

    node_mask: torch.Tensor
    """[n_nodes] bool"""
    edge_mask: torch.Tensor
    """[n_nodes, n_nodes] bool (target, source)"""
    cumulative: torch.Tensor
    """[n_nodes] each node's cumulative influence share when nodes are sorted by influence (0..1; the node's rank)."""


def prune(adjacency: torch.Tensor, logit_weights: torch.Tensor, n_features: int, n_tokens: int, n_logits: int,
          node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Node then edge pruning by influence on the logits (see the module docstring); thresholds in [0, 1]."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise UniversalityError(f"{name} is {value}; it must be between 0 and 1")
    n = adjacency.shape[0]
    fixed = n - n_logits - n_tokens  # features and errors come first
    normalized = normalize_rows(adjacency)
    node_influence = influence(normalized, logit_weights)
    node_mask = node_influence >= _threshold(node_influence, node_threshold)
    node_mask[fixed:] = True
    pruned = adjacency.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    pruned_norm = normalize_rows(pruned)
    edge_scores = pruned_norm * (influence(pruned_norm, logit_weights) + logit_weights.to(torch.float64))[:, None]
    edge_mask = (edge_scores >= _threshold(edge_scores, edge_threshold)) & (edge_scores > 0)
    while True:
        before = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[:fixed] &= edge_mask[:, :fixed].any(0)
        node_mask[:n_features] &= edge_mask[:n_features].any(1)
        if torch.equal(before, node_mask):
            break
    order = torch.argsort(node_influence, descending=True)
    cumulative = torch.zeros_like(node_influence)
    total = node_influence.sum()
    cumulative[order] = torch.cumsum(node_influence[order], 0) / (total if total > 0 else 1.0)
    return Pruned(node_mask, edge_mask, cumulative)


def graph_scores(adjacency: torch.Tensor, logit_weights: torch.Tensor, n_features: int, n_errors: int,
                 n_tokens: int) -> tuple[float, float]:
    """(replacement score, completeness score) of an unpruned graph (see the module docstring)."""
    normalized = normalize_rows(adjacency)
    node_influence = influence(normalized, logit_weights)
    errors = slice(n_features, n_features + n_errors)
    tokens = slice(n_features + n_errors, n_features + n_errors + n_tokens)
    token_part, error_part = node_influence[tokens].sum(), node_influence[errors].sum()
    replacement = float(token_part / (token_part + error_part)) if token_part + error_part > 0 else 1.0
    non_error = 1 - normalized[:, errors].sum(1)
    weight = node_influence + logit_weights.to(torch.float64)
    completeness = float((non_error * weight).sum() / weight.sum())
    return replacement, completeness
