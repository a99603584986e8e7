"""Write our dictionaries in SAELens' and sparsify's layouts, so they open in those libraries' tools.

Our coders keep an input and an output scale (``x_n = x * input_scale``,
``recon = (codes @ W_dec + b_dec) / output_scale``); neither library has both,
so the scales are folded into the weights: with ``s_in``/``s_out``,
``W_enc' = s_in W_enc``, ``W_dec' = W_dec / s_out``, ``b_dec' = b_dec / s_out``,
``W_skip' = W_skip s_in / s_out`` (for autoencoders ``s_in = s_out``, so
``x - b_dec'`` is what our encoder sees, divided by ``s_in``). Codes are unchanged.

* :func:`to_saelens`: ``cfg.json`` + ``sae_weights.safetensors``; ``relu`` →
  ``standard`` (``transcoder``/``skip_transcoder``), ``topk`` → ``topk``,
  ``jumprelu`` → ``jumprelu`` (``jumprelu_transcoder``...), ``batchtopk`` →
  ``jumprelu`` with its threshold on every latent (what SAELens saves a trained
  BatchTopK as), ``gated`` → ``gated``.
* :func:`to_sparsify`: ``cfg.json`` + ``sae.safetensors`` of a ``topk`` coder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._errors import UniversalityError
from .._io import atomic_save_tensors, atomic_write_json, ensure_writable_dir

if TYPE_CHECKING:
    from .coder import SparseCoder

SAELENS_LAYOUT_VERSION = "6.0.0"
"""The SAELens ``cfg.json`` layout written (``metadata.sae_lens_version``)."""


def _scaled(coder: "SparseCoder") -> dict[str, torch.Tensor]:
    """Our tensors with the input/output scales folded in (float32, CPU)."""
    c = coder.cfg
    s_in, s_out = float(c.input_scale), float(c.output_scale)
    t = {k: v.detach().double().cpu() for k, v in coder.state_dict().items() if v.is_floating_point()}
    out = {"W_enc": t["W_enc"] * s_in, "b_enc": t["b_enc"], "W_dec": t["W_dec"] / s_out, "b_dec": t["b_dec"] / s_out}
    if coder.W_skip is not None:
        out["W_skip"] = t["W_skip"] * (s_in / s_out)
    for extra in ("r_mag", "b_mag", "log_threshold", "threshold"):
        if extra in t:
            out[extra] = t[extra]
    if not c.transcoder and abs(s_in - s_out) > 1e-12 * max(s_in, s_out):
        raise UniversalityError(f"this autoencoder has input_scale={s_in} != output_scale={s_out}; neither SAELens nor sparsify can express that")
    return out


def to_saelens(coder: "SparseCoder", path: str | os.PathLike, hook_name: str | None = None, model_name: str | None = None) -> Path:
    """Write ``coder`` as a SAELens folder (``SAE.load_from_disk`` reads it); returns the folder.

    ``hook_name`` is stored as SAELens' ``metadata.hook_name`` (default: the coder's own hook).
    """
    c = coder.cfg
    t = _scaled(coder)
    kind = c.kind
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu", "gated": "gated"}.get(kind)
    if arch is None:
        raise UniversalityError(f"a '{kind}' dictionary has no SAELens architecture; exportable kinds: relu, topk, jumprelu, batchtopk, gated")
    if c.transcoder:
        if arch not in ("standard", "jumprelu"):
            raise UniversalityError(f"SAELens has no {arch} transcoder; exportable transcoders are relu and jumprelu kinds")
        arch = ("" if arch == "standard" else "jumprelu_") + ("skip_transcoder" if c.skip else "transcoder")
    elif c.skip:
        raise UniversalityError("SAELens has no skip connection for autoencoders; export a skip transcoder instead")
    tensors: dict[str, torch.Tensor] = {"W_enc": t["W_enc"].t(), "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if kind == "gated":
        tensors.update(b_gate=t["b_enc"], r_mag=t["r_mag"], b_mag=t["b_mag"])
    else:
        tensors["b_enc"] = t["b_enc"]
    if kind == "jumprelu":
        tensors["threshold"] = t["log_threshold"].exp()
    elif kind == "batchtopk":
        tensors["threshold"] = t["threshold"].clamp_min(0).expand(c.n_latents).clone()
    if "W_skip" in t:
        tensors["W_skip"] = t["W_skip"]
    hook = hook_name or c.hook
    cfg: dict[str, Any] = {
        "architecture": arch, "d_in": c.d_in, "d_sae": c.n_latents, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": not c.transcoder, "normalize_activations": "none", "reshape_activations": "none",
        # the layout of SAELens >= 6 (an older or absent version makes SAELens read the pre-6 layout)
        "metadata": {"sae_lens_version": SAELENS_LAYOUT_VERSION, "hook_name": hook, "model_name": model_name},
    }
    if c.transcoder:
        cfg["d_out"] = c.d_out
    if kind == "topk":
        cfg["k"] = int(c.k)
        cfg["rescale_acts_by_decoder_norm"] = False
    folder = ensure_writable_dir(path)
    atomic_save_tensors(folder / "sae_weights.safetensors", {k: v.float() for k, v in tensors.items()})
    atomic_write_json(folder / "cfg.json", cfg)
    return folder


def to_sparsify(coder: "SparseCoder", path: str | os.PathLike) -> Path:
    """Write a ``topk`` ``coder`` as a sparsify hookpoint folder (``SparseCoder.load_from_disk`` reads it); returns the folder."""
    c = coder.cfg
    if c.kind != "topk":
        raise UniversalityError(f"sparsify reads TopK coders only; this dictionary is '{c.kind}'")
    if c.transcoder and c.d_out != c.d_in:
        raise UniversalityError(f"sparsify transcoders map d_in to the same width; this one maps {c.d_in} to {c.d_out}")
    t = _scaled(coder)
    tensors = {"encoder.weight": t["W_enc"], "encoder.bias": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if "W_skip" in t:
        tensors["W_skip"] = t["W_skip"]
    cfg = {"activation": "topk", "expansion_factor": max(1, c.n_latents // c.d_in), "normalize_decoder": bool(c.unit_norm_decoder),
           "num_latents": c.n_latents, "k": int(c.k), "multi_topk": False, "skip_connection": bool(c.skip),
           "transcode": bool(c.transcoder), "d_in": c.d_in}
    folder = ensure_writable_dir(path)
    atomic_save_tensors(folder / "sae.safetensors", {k: v.float() for k, v in tensors.items()})
    atomic_write_json(folder / "cfg.json", cfg)
    return folder


__all__ = ["to_saelens", "to_sparsify"]
