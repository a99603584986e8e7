"""Attribution graphs through per-block dictionaries on Transformer, Mamba and RWKV hosts.

:func:`attribution_graph` freezes the host at one prompt (:mod:`.replacement`, :mod:`.mixers`,
:mod:`.norms`), splices a dictionary into every block (:mod:`.dictionaries`), and measures every
direct effect with batched backward passes (:mod:`.algorithm`). The result is a :class:`Graph`
(:mod:`.graph`) with circuit-tracer's pruning and scores (:mod:`.prune`), its JSON export and an
SVG drawing (:mod:`.svg`); :mod:`.compare` lines up graphs of two architectures through matched features.
"""

from .algorithm import attribution_graph, prompt_tokens
from .compare import InductionShape, induction_shape, partner_share
from .dictionaries import SITES, Site, layer_dictionaries, settled_fingerprint
from .graph import Graph, Node
from .prune import Pruned, graph_scores, influence, normalize_rows, prune
from .replacement import ReplacementModel
from .svg import render_svg

__all__ = ["Graph", "InductionShape", "induction_shape", "partner_share", "render_svg", "Node", "Pruned", "ReplacementModel", "SITES", "Site", "attribution_graph", "graph_scores",
           "influence", "layer_dictionaries", "normalize_rows", "prompt_tokens", "prune", "settled_fingerprint"]
