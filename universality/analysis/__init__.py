"""Circuit analyses over the hook vocabulary: induction localisation and the Off-by-One write lag.

* :func:`induction` — per-layer and per-head induction scores on repeated halves,
  and a tidy activation-patching table on the reference ``A B ... A`` task.
* :func:`write_lag` — at which lag δ a token's information is written into one
  layer's token-mixing memory (Transformer keys/values, Mamba state increments,
  RWKV keys/values); :func:`write_lag_all` runs every layer, :func:`compare_write_lag`
  several hosts.
* :func:`paper_findings` — the reference paper's Mamba findings (localisation, conv as previous-token
  mixer, behavioural Off-by-One with intervals) tested on one host, with a verdict sentence.
* :func:`induction_mamba` — a two-block Mamba with a hand-set induction circuit (ground truth).
* :func:`induction_match` — the induction rows of the depth map: MPPC of dictionaries at every layer pair of two
  hosts, all latents and induction latents only, with the localised induction pair marked and tested.

Hosts are used only through ``run_with_cache`` / ``run_with_hooks`` and the hook
names of ``docs/design.md``, so any host honouring the vocabulary works.
"""

from .attribution import Graph, attribution_graph
from .constructed import induction_mamba
from .induction import InductionConfig, InductionResult, InductionSummary, PatchEffect, induction, induction_sites
from .induction_match import InductionMatch, MatchRow, induction_match
from .paper_findings import OffByOne, PaperFindings, paper_findings
from .patching import PatchRun, PatchSite, patch_sites
from .tasks import InductionPrompts, distinct_tokens, induction_prompts, repeated_halves
from .write_lag import (WRITE_POINTS, LayerLag, WriteLagConfig, WriteLagProfile, WriteLagResult, WriteLagTable,
                        compare_write_lag, write_lag, write_lag_all)

__all__ = [
    "Graph", "attribution_graph", "InductionConfig", "InductionPrompts", "InductionResult", "InductionSummary", "LayerLag", "OffByOne", "PaperFindings", "PatchEffect", "PatchRun", "PatchSite",
    "WRITE_POINTS", "WriteLagConfig", "WriteLagProfile", "WriteLagResult", "WriteLagTable", "compare_write_lag", "distinct_tokens",
    "induction", "induction_mamba", "InductionMatch", "MatchRow", "induction_match", "induction_prompts", "induction_sites", "paper_findings", "patch_sites", "repeated_halves", "write_lag", "write_lag_all",
]
