"""Read dictionaries written by every major library, computing exactly what their authors' code computes.

:func:`load` tries each layout of :data:`LAYOUTS` in order (the first whose
files are present wins) and returns one :class:`~universality.sae.SparseCoder`
with ``coder.provenance`` (a :class:`Provenance`) and ``coder.source_format``.
A folder that holds several dictionaries (sparsify's one sub-folder per
hookpoint, a circuit-tracer transcoder set) needs ``hookpoint=``; :func:`load_set`
reads all of them. A folder matching no layout gets one sentence naming every
layout tried and the files it expects.

With ``host=`` the dictionary's hook (in its library's naming) is translated
into the host's vocabulary (:func:`universality.hosts.aliases.translate`),
checked against the host and set as ``coder.cfg.hook`` (``target_hook`` for
transcoders); without a host the translation is tried family-agnostically
and the hook left unset when it needs the model (``hidden_states[i]``).

Nothing is unpickled except through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch

from ..._errors import UniversalityError
from . import circuit_tracer, dictionary_learning, lm_saes, own, saelens, sparsify
from ._common import Provenance

if TYPE_CHECKING:
    from ..coder import SparseCoder


class Layout(NamedTuple):
    """One folder layout a library writes."""

    name: str
    """Short name (``coder.source_format`` of what it loads)."""
    expects: str
    """The files it needs, as said in the no-match error."""
    matches: Callable[[Path], bool]
    """Whether a path has this layout's files."""
    load: Callable[..., Any]
    """``(path, dtype=, **options) -> (coder, Provenance)``, or a dict of them for a set."""
    is_set: bool = False
    """Whether the layout holds several dictionaries (then ``hookpoint=`` picks one)."""


LAYOUTS: tuple[Layout, ...] = (
    Layout("universality", "cfg.json with \"format\": \"universality.sae\" + sae.safetensors", own.matches, own.load),
    Layout("saelens", "cfg.json + sae_weights.safetensors", saelens.matches, saelens.load),
    Layout("sparsify", "cfg.json + sae.safetensors", sparsify.matches, sparsify.load),
    Layout("sparsify-multi", "one sub-folder per hookpoint, each with cfg.json + sae.safetensors", sparsify.matches_multi,
           lambda p, **kw: {f.name: sparsify.load(f, **kw) for f in sparsify.hookpoint_folders(p)}, is_set=True),
    Layout("lm_saes-v1", "hyperparams.json + checkpoints/final.safetensors (or sae_weights.safetensors, .pt)", lm_saes.matches_v1, lm_saes.load_v1),
    Layout("lm_saes-v2", "config.json with hook_point_in + sae_weights.safetensors (or checkpoints/final.*)", lm_saes.matches_v2, lm_saes.load_v2),
    Layout("dictionary_learning", "ae.pt (+ config.json)", dictionary_learning.matches, dictionary_learning.load),
    Layout("circuit_tracer", "a YAML config listing transcoders + one .safetensors/.npz per layer", circuit_tracer.matches,
           circuit_tracer.load_set, is_set=True),
)
"""Every layout, in the order they are tried."""


def _no_match(path: Path) -> UniversalityError:
    tried = "; ".join(f"{lay.name} ({lay.expects})" for lay in LAYOUTS)
    return UniversalityError(f"folder '{path}' is not a known dictionary format; layouts tried: {tried}")


def detect_layout(path: str | os.PathLike) -> Layout:
    """The first :class:`Layout` whose files ``path`` has; one sentence naming every layout tried otherwise."""
    p = Path(path)
    if not p.exists():
        raise UniversalityError(f"dictionary folder '{p}' does not exist; give a folder written by save(), SAELens, sparsify, "
                                "lm_saes (Llama Scope), dictionary_learning or a circuit-tracer config")
    for layout in LAYOUTS:
        if layout.matches(p):
            return layout
    raise _no_match(p)


def _attach(coder: "SparseCoder", prov: Provenance, host: Any) -> "SparseCoder":
    """Set ``provenance``/``source_format`` and the hooks in our vocabulary (checked against ``host`` when given)."""
    from ...hosts.aliases import translate

    coder.provenance = prov
    coder.source_format = prov.layout.split("-")[0] if prov.layout != "sparsify-multi" else "sparsify"
    model_type = getattr(host, "model_type", None)
    n_layers = getattr(host, "n_layers", None)
    layout = None
    if host is not None and any(s and s.startswith("hidden_states") for s in (prov.source_hook, prov.source_target_hook)):
        from ...hosts.hf_layout import hidden_states_layout

        layout = hidden_states_layout(host.model, torch.zeros(1, 4, dtype=torch.long, device=host.device)).names
    names = {}
    for field, src in (("hook", prov.source_hook), ("target_hook", prov.source_target_hook)):
        if not src:
            continue
        if host is None:
            try:
                names[field] = translate(src, None, None).name
            except UniversalityError:
                names[field] = None
        else:
            names[field] = translate(src, model_type, n_layers, layout).name
    if host is not None:
        host.validate_names([v for v in names.values() if v])
        d = getattr(host, "d_model", None)
        hook = names.get("hook")
        if d is not None and hook and hook.endswith(("resid_post", "resid_pre", "mlp_out", "mixer_out")) and coder.cfg.d_in != d:
            raise UniversalityError(f"the dictionary reads {coder.cfg.d_in}-wide activations but '{hook}' of this host is {d} wide; "
                                    "it was trained on another model")
    for field, value in names.items():
        if value is not None or host is not None:
            setattr(coder.cfg, field, value)
    return coder


def load_set(path: str | os.PathLike, device: str = "cpu", dtype: torch.dtype = torch.float32, host: Any = None,
             **options: Any) -> dict[str, "SparseCoder"]:
    """Every dictionary under ``path`` by name (a single-dictionary folder gives one entry, named after the folder)."""
    layout = detect_layout(path)
    p = Path(path)
    loaded = layout.load(p, dtype=dtype, **options)
    if not layout.is_set:
        loaded = {p.name: loaded}
    return {name: _attach(coder.to(device), prov, host) for name, (coder, prov) in loaded.items()}


def load(path: str | os.PathLike, device: str = "cpu", *, hookpoint: str | None = None, host: Any = None,
         dtype: torch.dtype = torch.float32, norm_scaling_factor: float | None = None) -> "SparseCoder":
    """Load the dictionary at ``path`` (any layout of :data:`LAYOUTS`) onto ``device``.

    ``hookpoint`` picks one dictionary of a set (a sparsify sub-folder name, a
    circuit-tracer transcoder id or layer); ``host`` translates and checks its
    hook names; ``dtype`` keeps the folded weights at that precision;
    ``norm_scaling_factor`` supplies SAELens' ``expected_average_only_in`` factor.
    """
    layout = detect_layout(path)
    p = Path(path)
    options: dict[str, Any] = {"dtype": dtype}
    if norm_scaling_factor is not None:
        options["norm_scaling_factor"] = norm_scaling_factor
    if not layout.is_set:
        coder, prov = layout.load(p, **options)
        return _attach(coder.to(device).eval(), prov, host)
    loaded = layout.load(p, **options)
    names = list(loaded)
    if hookpoint is None:
        if len(names) == 1:
            hookpoint = names[0]
        else:
            raise UniversalityError(f"'{p}' holds {len(names)} dictionaries ({', '.join(names)}); pick one with hookpoint=")
    key = hookpoint if hookpoint in loaded else next((n for n, (_, pr) in loaded.items() if pr.source_hook and f"blocks.{hookpoint}." in pr.source_hook + "."), None)
    if key is None:
        raise UniversalityError(f"hookpoint '{hookpoint}' is not in '{p}'; it holds {', '.join(names)}")
    coder, prov = loaded[key]
    return _attach(coder.to(device).eval(), prov, host)


__all__ = ["LAYOUTS", "Layout", "Provenance", "detect_layout", "load", "load_set"]
