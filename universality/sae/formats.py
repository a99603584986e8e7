"""Saving and loading dictionaries: our own folder format, EleutherAI sparsify folders, SAELens folders.

Every format is a folder with a JSON config and a safetensors file; nothing is
ever unpickled.

* own: ``cfg.json`` (``"format": "universality.sae"`` plus every field of
  the kind's config) + ``sae.safetensors`` (``W_enc``, ``b_enc``, ``W_dec``,
  ``b_dec``, optional ``W_skip`` and the kind's extra tensors). Loading builds
  the config class registered for the saved ``kind`` and ignores keys it does
  not know, so folders written when every kind shared one flat config (with
  ``k``, ``l1_coefficient``, ... in every file) still load.
* sparsify: ``cfg.json`` (``d_in``, ``k``, ``num_latents`` or
  ``expansion_factor``, ``transcode``, ``skip_connection``) + ``sae.safetensors``
  (``encoder.weight`` [n, d_in], ``encoder.bias``, ``W_dec`` [n, d_out],
  ``b_dec``, optional ``W_skip`` [d_out, d_in]); loaded as a ``topk`` coder.
* SAELens: ``cfg.json`` (``architecture``, ``d_in``, ``d_sae``,
  ``apply_b_dec_to_input``, ``k``/``activation_fn_kwargs``) +
  ``sae_weights.safetensors`` (``W_enc`` [d_in, d_sae], ``b_enc``, ``W_dec``
  [d_sae, d_in], ``b_dec``, ``threshold`` for JumpReLU).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._errors import UniversalityError
from .._io import atomic_save_tensors, atomic_write_json, ensure_writable_dir, load_tensors
from . import registry
from .config import CoderConfig

if TYPE_CHECKING:
    from .coder import SparseCoder

FORMAT_NAME = "universality.sae"
FORMAT_VERSION = 1


def save(coder: "SparseCoder", path: str | os.PathLike) -> Path:
    """Write ``coder`` to the folder ``path`` as ``cfg.json`` + ``sae.safetensors`` (atomic writes); returns the folder."""
    folder = ensure_writable_dir(path)
    atomic_save_tensors(folder / "sae.safetensors", coder.tensors())
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **coder.cfg.to_dict()}
    metrics = getattr(coder, "metrics", None)
    if metrics is not None:
        meta["metrics"] = metrics.as_dict()
    atomic_write_json(folder / "cfg.json", meta)
    return folder


def _build(cfg: CoderConfig) -> "SparseCoder":
    """A fresh coder of ``cfg.kind`` (the registered class), to load tensors into."""
    return registry.coder_class(cfg.kind)(cfg)


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UniversalityError(f"'{p}' is not valid JSON ({e.msg} at line {e.lineno})") from None


def _load_own(folder: Path, cfg: dict[str, Any], device: str) -> "SparseCoder":
    if cfg.get("version", 0) > FORMAT_VERSION:
        raise UniversalityError(f"'{folder}' was written by a newer format version {cfg['version']}; this reader knows up to {FORMAT_VERSION}")
    coder = _build(CoderConfig.from_dict(cfg))
    tensors = load_tensors(folder / "sae.safetensors")
    missing = set(coder.state_dict()) - set(tensors)
    if missing:
        raise UniversalityError(f"'{folder / 'sae.safetensors'}' lacks tensors {sorted(missing)}; the folder is incomplete")
    coder.load_state_dict(tensors, strict=True)
    return coder.to(device).eval()


def _load_sparsify(folder: Path, cfg: dict[str, Any], device: str) -> "SparseCoder":
    t = load_tensors(folder / "sae.safetensors")
    for key in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"):
        if key not in t:
            raise UniversalityError(f"sparsify folder '{folder}' lacks tensor '{key}' in sae.safetensors")
    W_enc, W_dec = t["encoder.weight"], t["W_dec"]
    n, d_in = W_enc.shape
    d_out = W_dec.shape[1]
    transcode = bool(cfg.get("transcode", False)) or d_out != d_in
    k = int(cfg.get("k", 32))
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise UniversalityError(f"sparsify folder '{folder}' uses activation '{activation}'; only 'topk' is supported")
    c = CoderConfig(kind="topk", d_in=int(d_in), n_latents=int(n), k=min(k, int(n) - 1), d_out=int(d_out), transcoder=transcode,
                    skip="W_skip" in t, unit_norm_decoder=bool(cfg.get("normalize_decoder", True)))
    coder = _build(c)
    state = {"W_enc": W_enc, "b_enc": t["encoder.bias"], "W_dec": W_dec, "b_dec": t["b_dec"]}
    if "W_skip" in t:
        state["W_skip"] = t["W_skip"]
    coder.load_state_dict({k2: v.float() for k2, v in state.items()}, strict=True)
    return coder.to(device).eval()


_SAELENS_ARCH = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}


def _load_saelens(folder: Path, cfg: dict[str, Any], device: str) -> "SparseCoder":
    arch = cfg.get("architecture", "standard")
    if arch not in _SAELENS_ARCH:
        raise UniversalityError(f"SAELens folder '{folder}' has architecture '{arch}'; supported: {', '.join(_SAELENS_ARCH)}")
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm != "none":
        raise UniversalityError(f"SAELens folder '{folder}' uses normalize_activations='{norm}'; only 'none' is supported")
    t = load_tensors(folder / "sae_weights.safetensors")
    for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
        if key not in t:
            raise UniversalityError(f"SAELens folder '{folder}' lacks tensor '{key}' in sae_weights.safetensors")
    W_enc = t["W_enc"].t().contiguous()  # SAELens stores [d_in, d_sae]
    n, d_in = W_enc.shape
    d_out = t["W_dec"].shape[1]
    kind = _SAELENS_ARCH[arch]
    if cfg.get("activation_fn_str") == "topk" or cfg.get("activation_fn") == "topk":
        kind = "topk"
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k") or 32
    transcoder = not bool(cfg.get("apply_b_dec_to_input", True)) or d_out != d_in
    # from_dict drops k for the kinds without one (relu, jumprelu)
    c = CoderConfig.from_dict(dict(kind=kind, d_in=int(d_in), n_latents=int(n), k=min(int(k), int(n) - 1), d_out=int(d_out),
                                   transcoder=transcoder, hook=cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")))
    coder = _build(c)
    state = {"W_enc": W_enc, "b_enc": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if kind == "jumprelu":
        if "threshold" not in t:
            raise UniversalityError(f"SAELens JumpReLU folder '{folder}' lacks tensor 'threshold'")
        # SAELens: acts = relu(pre) * (pre > threshold); ours: pre * (pre > exp(log_threshold)), equal for threshold > 0
        state["log_threshold"] = t["threshold"].float().clamp_min(1e-12).log()
    if kind == "batchtopk":
        thr = t.get("threshold", torch.zeros(()))
        state["threshold"] = thr.reshape(()) if thr.numel() == 1 else thr.min().reshape(())
        state["threshold_steps"] = torch.zeros((), dtype=torch.long)
    coder.load_state_dict({k2: (v.float() if v.is_floating_point() else v) for k2, v in state.items()}, strict=True)
    return coder.to(device).eval()


def detect_format(path: str | os.PathLike) -> str:
    """``"universality"``, ``"sparsify"`` or ``"saelens"`` for a dictionary folder; a clear error otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise UniversalityError(f"dictionary folder '{folder}' does not exist; give a folder written by save(), sparsify or SAELens")
    cfg_path = folder / "cfg.json"
    if cfg_path.is_file():
        cfg = _read_json(cfg_path)
        if cfg.get("format") == FORMAT_NAME:
            return "universality"
        if (folder / "sae_weights.safetensors").is_file():
            return "saelens"
        if (folder / "sae.safetensors").is_file() and ("num_latents" in cfg or "expansion_factor" in cfg or "d_in" in cfg):
            return "sparsify"
    raise UniversalityError(
        f"folder '{folder}' is not a known dictionary format; expected cfg.json with sae.safetensors (ours or sparsify) or sae_weights.safetensors (SAELens)"
    )


def load(path: str | os.PathLike, device: str = "cpu") -> "SparseCoder":
    """Load a dictionary folder of any supported format (dispatching on its config) onto ``device``."""
    fmt = detect_format(path)
    folder = Path(path)
    cfg = _read_json(folder / "cfg.json")
    loader = {"universality": _load_own, "sparsify": _load_sparsify, "saelens": _load_saelens}[fmt]
    coder = loader(folder, cfg, device)
    coder.source_format = fmt
    return coder
