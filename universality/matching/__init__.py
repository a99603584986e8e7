"""Matching: similarity, MPPC, assignment, optimal transport, seed overlap, geometry, baselines, families.

Works on tensors and arrays only (never imports hosts or model code), so it
serves any dictionaries, imported ones included. See ``docs/matching.md``.
"""

from .assign import Assignment, assign
from .families import Families, families_from_mppc, feature_families
from .geometry import GeometryScore, linear_cka, rsa, svcca, svcca_components
from .grid import LayerGrid, grid_from_results, mppc_grid
from .mppc import MatchDirection, MPPCResult, MPPCSummary, PearsonAccumulator, mppc, pearson_matrix
from .seeds import SeedOverlap, SeedOverlapResult, SeedPresence, seed_overlap, seed_presence, seed_stability
from .similarity import Factored, cosine_factors, cosine_similarity, topk_candidates
from .stats import (BaselineComparison, Interval, bias_bounded_interval, bootstrap_mppc, compare_baselines, summarize_values,
                    summary_values)

__all__ = [
    "Assignment", "BaselineComparison", "Factored", "Families", "GeometryScore", "Interval", "LayerGrid",
    "MPPCResult", "MPPCSummary", "MatchDirection", "PearsonAccumulator", "SeedOverlap", "SeedOverlapResult", "SeedPresence", "assign",
    "bias_bounded_interval", "bootstrap_mppc", "compare_baselines", "cosine_factors", "cosine_similarity", "families_from_mppc",
    "feature_families", "grid_from_results", "linear_cka", "mppc", "mppc_grid", "pearson_matrix", "rsa",
    "seed_overlap", "seed_presence", "seed_stability", "summarize_values", "summary_values", "svcca", "svcca_components", "topk_candidates",
]
