"""Which dictionary replaces which sublayer, and the checks that a set of dictionaries fits a host.

Transformer and RWKV: one (skip) transcoder per block from ``mlp_in`` to ``mlp_out``.
Mamba (no MLP): one autoencoder per block on ``mixer_out`` (encoder input and target both the
frozen mixer's output). Every block needs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..._errors import UniversalityError


@dataclass(frozen=True)
class Site:
    """Where one block's dictionary reads and writes."""

    input_point: str
    """Block point whose value the encoder reads (``"mlp_in"`` or ``"mixer_out"``)."""
    output_point: str
    """Block point the reconstruction replaces (``"mlp_out"`` or ``"mixer_out"``)."""


SITES = {"transformer": Site("mlp_in", "mlp_out"), "rwkv": Site("mlp_in", "mlp_out"), "mamba": Site("mixer_out", "mixer_out")}
"""The dictionary site of each architecture."""


def site_of(host: Any) -> Site:
    """The :class:`Site` of ``host``'s architecture."""
    try:
        return SITES[host.arch]
    except KeyError:
        raise UniversalityError(f"attribution graphs support transformer, mamba and rwkv hosts, not '{host.arch}'") from None


def settled_fingerprint(host: Any) -> str:
    """``host.fingerprint`` after one forward pass.

    RWKV-4 hosts rescale their output weights in place on the first forward in eval mode (as
    transformers does), which changes the fingerprint once; recording and checking the
    fingerprint after one forward makes it the same for every later use.
    """
    with torch.no_grad():
        host.run_with_cache(torch.zeros(1, 1, dtype=torch.long), [])
    return host.fingerprint


def layer_dictionaries(host: Any, transcoders: Mapping[int, Any] | Sequence[Any]) -> dict[int, Any]:
    """``{layer: dictionary}`` for every block of ``host``, checked against its hook names, widths and fingerprint.

    ``transcoders`` is a sequence with one dictionary per block, or a mapping from block index to dictionary.
    Raises one :class:`UniversalityError` sentence for a missing block, a dictionary trained on another hook
    or another host, or a width that does not match.
    """
    if isinstance(transcoders, Mapping):
        found = {int(k): v for k, v in transcoders.items()}
    elif isinstance(transcoders, Sequence) and not isinstance(transcoders, (str, bytes)):
        found = dict(enumerate(transcoders))
    else:
        raise UniversalityError(f"transcoders is {type(transcoders).__name__}; pass a list with one dictionary per "
                                "block or a dict {block: dictionary}")
    site = site_of(host)
    extra = sorted(k for k in found if not 0 <= k < host.n_layers)
    if extra:
        raise UniversalityError(f"transcoders name block {extra[0]}, but the host has blocks 0..{host.n_layers - 1}")
    missing = [i for i in range(host.n_layers) if found.get(i) is None]
    if missing:
        raise UniversalityError(f"block {missing[0]} has no transcoder; attribution needs one for every block "
                                f"0..{host.n_layers - 1} (on blocks.i.{site.input_point} -> blocks.i.{site.output_point})")
    fingerprint = None
    if any(getattr(getattr(c, "cfg", None), "host", None) is not None for c in found.values()):
        fingerprint = settled_fingerprint(host)
    for layer, coder in found.items():
        _check(host, site, layer, coder, fingerprint)
    return found


def _check(host: Any, site: Site, layer: int, coder: Any, fingerprint: str | None) -> None:
    cfg = getattr(coder, "cfg", None)
    if cfg is None or not isinstance(getattr(coder, "W_enc", None), torch.Tensor):
        raise UniversalityError(f"the transcoder for block {layer} is {type(coder).__name__}, not a universality "
                                "sparse dictionary (load one with universality.sae.load)")
    want_in, want_out = f"blocks.{layer}.{site.input_point}", f"blocks.{layer}.{site.output_point}"
    if cfg.hook is not None and cfg.hook != want_in:
        raise UniversalityError(f"the transcoder for block {layer} was trained on '{cfg.hook}'; it must read '{want_in}'")
    target = cfg.target_hook if cfg.target_hook is not None else (cfg.hook if not cfg.transcoder else None)
    if target is not None and target != want_out:
        raise UniversalityError(f"the transcoder for block {layer} reconstructs '{target}'; it must write '{want_out}'")
    own = getattr(cfg, "host", None)
    if own is not None and own != fingerprint:
        raise UniversalityError(f"the transcoder for block {layer} was trained on host {own}, not on this host "
                                f"({fingerprint}); train one on this model's activations")
    if cfg.d_in != host.d_model or (cfg.d_out or cfg.d_in) != host.d_model:
        raise UniversalityError(f"the transcoder for block {layer} maps width {cfg.d_in} -> {cfg.d_out or cfg.d_in}; "
                                f"this host's stream is {host.d_model} wide")
