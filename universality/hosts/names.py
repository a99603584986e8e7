"""Hook-name builders and the block at a relative depth: the vocabulary's arithmetic, free of any model.

Per-block hook points are named ``blocks.<layer>.<point>`` (``point`` one of a
host's :attr:`~universality.hosts.base.Host.block_points`, e.g. ``resid_post``);
``embed`` and ``final_norm`` stand alone. See ``docs/design.md``.
"""

from __future__ import annotations

import math

from .._errors import UniversalityError


def hook_name(layer: int, point: str) -> str:
    """Full name of per-block hook ``point`` at block ``layer``: ``hook_name(3, "mlp_out") == "blocks.3.mlp_out"``."""
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise UniversalityError(f"layer {layer!r} is not valid; give a block index, an integer >= 0")
    if not isinstance(point, str) or not point or point.startswith(".") or "/" in point:
        raise UniversalityError(f"hook point {point!r} is not valid; give a per-block point such as 'resid_post' or 'mlp_out'")
    return f"blocks.{layer}.{point}"


def layer_at(n_layers: int, depth: float) -> int:
    """Block index at relative depth ``depth`` of ``n_layers`` blocks: 0 is the first block, 1 the last, rounded half up."""
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise UniversalityError(f"n_layers {n_layers!r} is not valid; a host has at least one block")
    if not isinstance(depth, (int, float)) or isinstance(depth, bool) or not math.isfinite(depth) or not 0 <= depth <= 1:
        raise UniversalityError(f"depth {depth!r} is not valid; give a relative depth between 0 (first block) and 1 (last block)")
    return int(depth * (n_layers - 1) + 0.5)


__all__ = ["hook_name", "layer_at"]
