"""OpenMOSS Language-Model-SAEs (``lm_saes``, now ``llamascopium``) folders, Llama Scope included.

Two generations of the format:

* **v1 (release format of Llama Scope)**: ``hyperparams.json`` (+ ``lm_config.json``)
  and one checkpoint, searched in the original's order
  ``sae_weights.safetensors``, ``sae_weights.pt``, ``checkpoints/pruned.*``,
  ``checkpoints/final.*``; tensors ``encoder.weight`` [d_sae, d_model],
  ``encoder.bias``, ``decoder.weight`` [d_model, d_sae], ``decoder.bias``.
  The original loader (1) folds the dataset-wise norm — with
  ``f_in = sqrt(d_model) / N_in`` and ``f_out = sqrt(d_model) / N_out`` it divides
  ``encoder.bias`` by ``f_in``, ``decoder.bias`` by ``f_out`` and multiplies
  ``decoder.weight`` by ``f_in / f_out`` — then (2), when
  ``sparsity_include_decoder_norm``, moves each decoder column's norm into the
  encoder. Its JumpReLU compares the folded pre-activation with the scalar
  ``jump_relu_threshold``. In the file's terms, with ``n_i = ||decoder.weight[:, i]||``:
  ``s_i = (n_i / f_out) (W_i . (f_in x) + b_i)``, ``z_i = s_i if s_i > theta``,
  ``x_hat = sum_i z_i decoder.weight[:, i] / n_i + decoder.bias / f_out``.
  We build exactly that (input and output scales 1, all folded into the weights).
* **later formats**: ``config.json`` (``sae_type: "sae"``, ``d_model``,
  ``expansion_factor``, ``hook_point_in``/``hook_point_out``, ``act_fn``,
  ``norm_activation``, ``sparsity_include_decoder_norm``, ``top_k``) with
  ``sae_weights.safetensors``; keys either ``encoder.*``/``decoder.*`` or v2's
  ``W_E`` [d_model, d_sae], ``b_E``, ``W_D`` [d_sae, d_model], ``b_D``; a per-feature
  ``activation_function.log_jumprelu_threshold``; the dataset norms as scalar
  tensors ``dataset_average_activation_norm.<hook>``. The encoder runs on
  normalised input ``f_in x`` and gates on ``hidden_pre * n_i`` (``n_i`` the
  decoder norm) against ``exp(log_jumprelu_threshold_i)``; the reconstruction is
  divided by ``f_out``. We keep those scales as ``input_scale``/``output_scale``
  and fold ``n_i`` into the encoder, so codes are ``n_i * hidden_pre`` (the
  quantity the original gates on; the original's ``encode`` divides it back by
  ``n_i``) and active sets and reconstructions equal the original's.

The BOS position of Llama Scope SAEs fires thousands of latents: the
provenance marks ``skip_bos`` so evaluations leave position 0 out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..._errors import UniversalityError
from ._common import Provenance, build, first_existing, fold_decoder_norms, fold_input_bias, need, read_json, read_tensors, scalar

CHECKPOINTS = ("sae_weights.safetensors", "sae_weights.pt", "checkpoints/pruned.safetensors", "checkpoints/pruned.pt",
               "checkpoints/final.safetensors", "checkpoints/final.pt")
"""Checkpoint files, in the order the original loader tries them."""


def matches_v1(folder: Path) -> bool:
    """``hyperparams.json`` and one of :data:`CHECKPOINTS`."""
    return (folder / "hyperparams.json").is_file() and first_existing(folder, CHECKPOINTS) is not None


def matches_v2(folder: Path) -> bool:
    """``config.json`` naming ``sae_type``/``hook_point_in`` and one of :data:`CHECKPOINTS`."""
    if not (folder / "config.json").is_file() or first_existing(folder, CHECKPOINTS) is None:
        return False
    cfg = read_json(folder / "config.json")
    return "hook_point_in" in cfg or cfg.get("sae_type") == "sae"


def _dataset_factors(cfg: dict[str, Any], norms: dict[str, float], d_model: int, source: str) -> tuple[float, float]:
    """``(f_in, f_out) = sqrt(d_model) / N`` for the input and output hooks (1, 1 when the folder was saved unnormalised)."""
    mode = cfg.get("norm_activation", "dataset-wise")
    if mode in ("inference", "none"):
        return 1.0, 1.0
    if mode != "dataset-wise":
        raise UniversalityError(f"{source} uses norm_activation='{mode}', a per-token normalisation no linear dictionary reproduces; "
                                "supported are 'dataset-wise' and 'inference'")
    hook_in = cfg.get("hook_point_in")
    hook_out = cfg.get("hook_point_out") or hook_in
    n_in = norms.get("in", norms.get(hook_in))
    n_out = norms.get("out", norms.get(hook_out))
    if n_in is None or n_out is None:
        raise UniversalityError(f"{source} uses norm_activation='dataset-wise' but gives no dataset_average_activation_norm for "
                                f"'in'/'out' or '{hook_in}'/'{hook_out}'")
    n_in = scalar(n_in, "dataset_average_activation_norm (in)", source)
    n_out = scalar(n_out, "dataset_average_activation_norm (out)", source)
    return math.sqrt(d_model) / n_in, math.sqrt(d_model) / n_out


def _unsupported(cfg: dict[str, Any], source: str) -> None:
    if cfg.get("use_glu_encoder"):
        raise UniversalityError(f"{source} uses a GLU encoder (use_glu_encoder=true), which no supported dictionary kind reproduces")


def _build_act(act: str, state: dict, cfg: dict[str, Any], cfg_src: str, source: str, dtype: torch.dtype, meta: dict) -> Any:
    """The coder of lm_saes activation ``act`` (jumprelu: ``state`` already holds ``log_threshold``)."""
    if act == "jumprelu":
        return build("jumprelu", state, source, dtype, **meta)
    if act == "topk":
        return build("topk", state, source, dtype, k=int(cfg.get("top_k", 50)), **meta)
    if act == "relu":
        return build("relu", state, source, dtype, **meta)
    raise UniversalityError(f"act_fn='{act}' in {cfg_src} is not supported; supported: jumprelu, topk, relu")


def load_v1(folder: Path, dtype: torch.dtype = torch.float32, **_: Any) -> tuple[Any, Provenance]:
    """A Llama Scope / lm_saes v1 folder → coder built as the original's folding steps say (see the module docstring)."""
    cfg = read_json(folder / "hyperparams.json")
    _unsupported(cfg, f"'{folder / 'hyperparams.json'}'")
    ckpt = first_existing(folder, CHECKPOINTS)
    source = f"'{ckpt}'"
    t = read_tensors(ckpt)
    W = need(t, "encoder.weight", (None, int(cfg["d_model"]) if "d_model" in cfg else None), source)
    d_model = W.shape[1]
    n = W.shape[0]
    b = need(t, "encoder.bias", (n,), source)
    D = need(t, "decoder.weight", (None, n), source)
    d_out = D.shape[0]
    use_bias = bool(cfg.get("use_decoder_bias", True))
    bD = need(t, "decoder.bias", (d_out,), source) if use_bias else torch.zeros(d_out, dtype=torch.float64)
    norms = cfg.get("dataset_average_activation_norm") or {}
    f_in, f_out = _dataset_factors(cfg, norms, d_model, f"'{folder / 'hyperparams.json'}'")
    # step 1: the dataset-wise norm folded into biases and decoder
    b = b / f_in
    bD = bD / f_out
    D = D * (f_in / f_out)
    W_dec = D.t()  # [n, d_out]
    # step 2: each decoder column's norm into the encoder
    if cfg.get("sparsity_include_decoder_norm", True):
        W, b, W_dec, _ = fold_decoder_norms(W, b, W_dec)
    act = str(cfg.get("act_fn", "relu")).lower()
    theta = float(cfg.get("jump_relu_threshold", 0.0) or 0.0)
    if act == "topk" and theta > 0:  # the original converts these to JumpReLU for inference
        act = "jumprelu"
    transcoder = d_out != d_model or (cfg.get("hook_point_out") not in (None, cfg.get("hook_point_in")))
    subtracts = use_bias and bool(cfg.get("apply_decoder_bias_to_pre_encoder", True))
    if subtracts and transcoder:  # ours does not subtract for transcoders
        b = fold_input_bias(W, b, -bD)
    elif not subtracts and not transcoder:  # ours subtracts for autoencoders
        b = fold_input_bias(W, b, bD)
    state = {"W_enc": W, "b_enc": b, "W_dec": W_dec, "b_dec": bD}
    meta = dict(transcoder=transcoder, unit_norm_decoder=False)
    if act == "jumprelu":
        if theta <= 0:
            raise UniversalityError(f"jump_relu_threshold={theta} in '{folder / 'hyperparams.json'}' is not valid for a JumpReLU dictionary; it must be > 0")
        state["log_threshold"] = torch.full((n,), math.log(theta), dtype=torch.float64)
    coder = _build_act(act, state, cfg, f"'{folder / 'hyperparams.json'}'", source, dtype, meta)
    prov = Provenance("lm_saes", "lm_saes-v1", str(folder), cfg.get("hook_point_in"), cfg.get("hook_point_out") if transcoder else None, True)
    return coder, prov


def _v2_tensors(t: dict[str, torch.Tensor], d_model: int, source: str) -> tuple[torch.Tensor, ...]:
    """``(W_enc [n, d], b_enc, W_dec [n, d_out], b_dec | None)`` from v2 (``W_E``...) or the older ``encoder.*`` keys."""
    if "W_E" in t:
        WE = need(t, "W_E", (d_model, None), source)
        n = WE.shape[1]
        WD = need(t, "W_D", (n, None), source)
        bD = need(t, "b_D", (WD.shape[1],), source) if "b_D" in t else None
        return WE.t(), need(t, "b_E", (n,), source), WD, bD
    W = need(t, "encoder.weight", (None, d_model), source)
    n = W.shape[0]
    D = need(t, "decoder.weight", (None, n), source)
    bD = need(t, "decoder.bias", (D.shape[0],), source) if "decoder.bias" in t else None
    return W, need(t, "encoder.bias", (n,), source), D.t(), bD


def load_v2(folder: Path, dtype: torch.dtype = torch.float32, **_: Any) -> tuple[Any, Provenance]:
    """A later lm_saes folder (``config.json``) → coder with the original's gate ``hidden_pre * decoder_norm`` (see the module docstring)."""
    cfg = read_json(folder / "config.json")
    cfg_src = f"'{folder / 'config.json'}'"
    _unsupported(cfg, cfg_src)
    if cfg.get("sae_type", "sae") != "sae":
        raise UniversalityError(f"{cfg_src} has sae_type='{cfg['sae_type']}'; only single-hook SAEs ('sae') are read")
    ckpt = first_existing(folder, CHECKPOINTS)
    source = f"'{ckpt}'"
    t = read_tensors(ckpt)
    d_model = int(scalar(cfg.get("d_model"), "d_model", cfg_src))
    W, b, W_dec, bD = _v2_tensors(t, d_model, source)
    n, d_out = W_dec.shape
    if bD is None or not cfg.get("use_decoder_bias", True):
        bD = torch.zeros(d_out, dtype=torch.float64)
    norms = {k.split(".", 1)[1]: float(v) for k, v in t.items() if k.startswith("dataset_average_activation_norm.")}
    norms.update(cfg.get("dataset_average_activation_norm") or {})
    f_in, f_out = _dataset_factors(cfg, norms, d_model, cfg_src)
    if cfg.get("sparsity_include_decoder_norm", True):
        W, b, W_dec, _ = fold_decoder_norms(W, b, W_dec)
    hook_in, hook_out = cfg.get("hook_point_in"), cfg.get("hook_point_out") or cfg.get("hook_point_in")
    transcoder = d_out != d_model or hook_out != hook_in
    if not transcoder:
        b = fold_input_bias(W, b, bD)  # the original never subtracts b_D before its encoder
    state = {"W_enc": W, "b_enc": b, "W_dec": W_dec, "b_dec": bD}
    meta = dict(transcoder=transcoder, unit_norm_decoder=False, input_scale=f_in, output_scale=f_out)
    act = str(cfg.get("act_fn", "relu")).lower()
    if act == "jumprelu":
        state["log_threshold"] = need(t, "activation_function.log_jumprelu_threshold", (n,), source)
    coder = _build_act(act, state, cfg, cfg_src, source, dtype, meta)
    prov = Provenance("lm_saes", "lm_saes-v2", str(folder), hook_in, hook_out if transcoder else None, True)
    return coder, prov


__all__ = ["CHECKPOINTS", "matches_v1", "matches_v2", "load_v1", "load_v2"]
