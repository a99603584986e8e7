"""Other libraries' hook names → our hook vocabulary, per model family.

Dictionaries trained elsewhere name the activation they read in their
library's terms; this table maps each onto ``embed``, ``blocks.<L>.<point>`` or
``final_norm`` (``docs/hosts.md``):

============================  ===================================  ======================
library                       example                              ours
============================  ===================================  ======================
TransformerLens / Llama Scope ``blocks.3.hook_resid_post``         ``blocks.3.resid_post``
                              ``blocks.3.hook_resid_pre``          ``blocks.3.resid_pre``
                              ``blocks.3.hook_mlp_out``            ``blocks.3.mlp_out``
                              ``blocks.3.hook_attn_out``           ``blocks.3.mixer_out``
                              ``blocks.3.mlp.hook_post``           ``blocks.3.mlp.act``
                              ``blocks.3.attn.hook_z`` (q, k, v,   ``blocks.3.attn.z`` ...
                              pattern)
                              ``blocks.3.ln2.hook_normalized``     ``blocks.3.mlp_in`` (*)
                              ``blocks.3.ln1.hook_normalized``     ``blocks.3.mixer_in`` (*)
circuit-tracer                ``blocks.3.mlp.hook_out``            ``blocks.3.mlp_out``
Llama Scope ids               ``L3R`` / ``L3A`` / ``L3M``          resid_post / mixer_out / mlp_out
sparsify (HF module names)    ``layers.3`` (``h.3`` GPT-2,         ``blocks.3.resid_post``
                              ``blocks.3`` RWKV)
                              ``layers.3.mlp`` (``feed_forward``)  ``blocks.3.mlp_out``
                              ``layers.3.self_attn`` (``attn``,    ``blocks.3.mixer_out``
                              ``attention``, ``mixer``)
dictionary_learning           ``resid_post_layer_3``               ``blocks.3.resid_post``
HF ``hidden_states``          ``hidden_states[0]``                 ``embed``
                              ``hidden_states[i]``, 1 <= i < n     ``blocks.<i-1>.resid_post``
                              ``hidden_states[n]`` / ``[-1]``      ``final_norm``
============================  ===================================  ======================

HF lists the embeddings first, so ``hidden_states[i]`` is the output of block
``i - 1`` (the off-by-one that bit sparsify's issue #74), and its last entry
is taken after the final norm. Some releases lay Mamba out otherwise; given a
host, the loaders read the layout off the model itself
(:func:`universality.hosts.hf_layout.hidden_states_layout`). (*) TransformerLens folds a norm's weight into
the next layer by default, so its ``hook_normalized`` equals ours only for
unfolded models; :func:`translate` marks these ``exact=False``.
``hook_resid_mid`` (between attention and MLP) has no point of its own here.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .._errors import UniversalityError


class Family(NamedTuple):
    """How one model family names its modules in Hugging Face checkpoints (what sparsify hooks)."""

    prefix: str
    """Module path of the backbone (``transformer``, ``model``, ...), optional in names."""
    blocks: str
    """Name of the block list (``h``, ``layers``, ``blocks``)."""
    mixers: tuple[str, ...]
    """Attention / SSM / time-mix submodule names (→ ``mixer_out``)."""
    mlps: tuple[str, ...]
    """MLP / channel-mix submodule names (→ ``mlp_out``)."""


FAMILIES: dict[str, Family] = {
    "gpt2": Family("transformer", "h", ("attn",), ("mlp",)),
    "gpt_neox": Family("gpt_neox", "layers", ("attention",), ("mlp",)),
    "llama": Family("model", "layers", ("self_attn",), ("mlp",)),
    "mistral": Family("model", "layers", ("self_attn",), ("mlp",)),
    "qwen2": Family("model", "layers", ("self_attn",), ("mlp",)),
    "mamba": Family("backbone", "layers", ("mixer",), ()),
    "mamba2": Family("backbone", "layers", ("mixer",), ()),
    "rwkv": Family("rwkv", "blocks", ("attention",), ("feed_forward",)),
}
"""Module naming per Hugging Face ``model_type``."""

TRANSFORMER_LENS: dict[str, tuple[str, bool]] = {
    "hook_resid_pre": ("resid_pre", True), "hook_resid_post": ("resid_post", True), "hook_mlp_out": ("mlp_out", True),
    "hook_attn_out": ("mixer_out", True), "mlp.hook_post": ("mlp.act", True), "mlp.hook_out": ("mlp_out", True),
    "attn.hook_z": ("attn.z", True), "attn.hook_q": ("attn.q", True), "attn.hook_k": ("attn.k", True),
    "attn.hook_v": ("attn.v", True), "attn.hook_pattern": ("attn.pattern", True),
    "ln1.hook_normalized": ("mixer_in", False), "ln2.hook_normalized": ("mlp_in", False),
}
"""TransformerLens per-block hook suffix → (our point, exact)."""

LLAMA_SCOPE_IDS = {"R": "resid_post", "A": "mixer_out", "M": "mlp_out"}
"""Llama Scope's short position letters (``L15R``) → our point."""

DICTIONARY_LEARNING = {"resid_post": "resid_post", "resid_pre": "resid_pre", "mlp_out": "mlp_out", "attn_out": "mixer_out"}
"""dictionary_learning's ``<kind>_layer_<L>`` submodule names → our point."""

_OURS = re.compile(r"^blocks\.(\d+)\.([a-z_]+(?:\.[a-z_]+)?)$")
_TL = re.compile(r"^blocks\.(\d+)\.((?:ln[12]\.|mlp\.|attn\.)?hook_[a-z_]+)$")
_HIDDEN = re.compile(r"^hidden_states(?:\[(-?\d+)\]|\.(\d+))$")
_SCOPE = re.compile(r"^L(\d+)(R|A|M)$")
_DL = re.compile(r"^(resid_post|resid_pre|mlp_out|attn_out)_layer_(\d+)$")


class Alias(NamedTuple):
    """One translated hook name."""

    name: str
    """Our hook name."""
    exact: bool
    """False where the other library's activation differs from ours by a fixed affine map (see the module docstring)."""
    library: str
    """Which naming scheme matched: ``universality``, ``transformer_lens``, ``llama_scope``, ``sparsify``, ``dictionary_learning``, ``hf_hidden_states``."""


def _check_layer(layer: int, n_layers: int | None, name: str) -> None:
    if n_layers is not None and layer >= n_layers:
        raise UniversalityError(f"hook '{name}' names block {layer}; this model has blocks 0..{n_layers - 1}")


def _module_alias(name: str, model_type: str | None) -> Alias | None:
    families = [FAMILIES[model_type]] if model_type in FAMILIES else list(FAMILIES.values())
    for fam in families:
        m = re.match(rf"^(?:{re.escape(fam.prefix)}\.)?{re.escape(fam.blocks)}\.(\d+)(?:\.([a-z_]+))?$", name)
        if not m:
            continue
        layer, sub = int(m.group(1)), m.group(2)
        if sub is None:
            return Alias(f"blocks.{layer}.resid_post", True, "sparsify")
        if sub in fam.mlps:
            return Alias(f"blocks.{layer}.mlp_out", True, "sparsify")
        if sub in fam.mixers:
            return Alias(f"blocks.{layer}.mixer_out", True, "sparsify")
    return None


def translate(name: str, model_type: str | None = None, n_layers: int | None = None,
              hidden_states: tuple[str, ...] | None = None) -> Alias:
    """Our hook name for another library's ``name`` (``model_type`` picks the HF module naming; ``n_layers`` resolves ``hidden_states``).

    ``hidden_states`` is the model's own layout (:func:`universality.hosts.hf_layout.hidden_states_layout`
    names each entry); without it the embeddings-first layout is assumed. Raises a
    :class:`UniversalityError` naming the schemes tried when nothing matches.
    """
    if not isinstance(name, str) or not name:
        raise UniversalityError(f"hook name {name!r} is not valid; give a string such as 'blocks.3.hook_resid_post' or 'layers.3'")
    if model_type is not None and model_type not in FAMILIES:
        model_type = None
    if name in ("embed", "final_norm"):
        return Alias(name, True, "universality")
    m = _TL.match(name)
    if m:
        layer, suffix = int(m.group(1)), m.group(2)
        if suffix not in TRANSFORMER_LENS:
            near = "; the nearest point of ours is blocks.<L>.mlp_in (its normalised form)" if suffix == "hook_resid_mid" else ""
            raise UniversalityError(f"TransformerLens hook '{name}' has no equivalent in our vocabulary{near}; "
                                    f"mapped suffixes: {', '.join(TRANSFORMER_LENS)}")
        _check_layer(layer, n_layers, name)
        point, exact = TRANSFORMER_LENS[suffix]
        return Alias(f"blocks.{layer}.{point}", exact, "transformer_lens")
    alias = _module_alias(name, model_type)  # before ours: RWKV's 'blocks.3' is a module name
    if alias is not None:
        _check_layer(int(alias.name.split(".")[1]), n_layers, name)
        return alias
    m = _OURS.match(name)
    if m:
        _check_layer(int(m.group(1)), n_layers, name)
        return Alias(name, True, "universality")
    m = _SCOPE.match(name)
    if m:
        _check_layer(int(m.group(1)), n_layers, name)
        return Alias(f"blocks.{int(m.group(1))}.{LLAMA_SCOPE_IDS[m.group(2)]}", True, "llama_scope")
    m = _DL.match(name)
    if m:
        _check_layer(int(m.group(2)), n_layers, name)
        return Alias(f"blocks.{int(m.group(2))}.{DICTIONARY_LEARNING[m.group(1)]}", True, "dictionary_learning")
    m = _HIDDEN.match(name)
    if m:
        if n_layers is None:
            raise UniversalityError(f"hook '{name}' depends on the model's depth (HF lists the embeddings first and ends after the final norm); "
                                    "load the dictionary with host= to resolve it")
        i = int(m.group(1) if m.group(1) is not None else m.group(2))
        if hidden_states is not None:
            if not -len(hidden_states) <= i < len(hidden_states):
                raise UniversalityError(f"hook '{name}' is out of range; this model's hidden_states has entries 0..{len(hidden_states) - 1}")
            return Alias(hidden_states[i], True, "hf_hidden_states")
        if i < 0:
            i += n_layers + 1
        if not 0 <= i <= n_layers:
            raise UniversalityError(f"hook '{name}' is out of range; hidden_states has entries 0..{n_layers} for {n_layers} blocks")
        out = "embed" if i == 0 else ("final_norm" if i == n_layers else f"blocks.{i - 1}.resid_post")
        return Alias(out, True, "hf_hidden_states")
    raise UniversalityError(
        f"hook '{name}' matches no known naming; tried TransformerLens (blocks.L.hook_resid_post), sparsify/HF modules "
        "(layers.L, h.L, layers.L.mlp), Llama Scope ids (L3R), dictionary_learning (resid_post_layer_L), "
        "HF hidden_states[i] and ours (blocks.L.resid_post)"
    )


__all__ = ["Family", "FAMILIES", "TRANSFORMER_LENS", "LLAMA_SCOPE_IDS", "DICTIONARY_LEARNING", "Alias", "translate"]
