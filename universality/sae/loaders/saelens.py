"""SAELens folders: ``cfg.json`` + ``sae_weights.safetensors`` (what ``SAE.save_model`` writes).

Tensors: ``W_enc`` [d_in, d_sae], ``b_enc``, ``W_dec`` [d_sae, d_out], ``b_dec``
[d_out]; ``threshold`` [d_sae] (JumpReLU); ``b_gate``, ``r_mag``, ``b_mag`` (gated,
no ``b_enc``); ``W_skip`` [d_out, d_in] (skip transcoders). SAELens' forward:
``sae_in = x * s - b_dec * apply_b_dec_to_input`` (``s`` the
``norm_scaling_factor`` of ``normalize_activations: expected_average_only_in``,
else 1), ``hidden_pre = sae_in @ W_enc + b_enc`` (TopK with
``rescale_acts_by_decoder_norm`` multiplies it by ``||W_dec[i]||`` and decodes
with unit rows), then per architecture

* ``standard``/``transcoder``: ``relu(hidden_pre)``;
* ``topk``: ReLU of the ``k`` largest ``hidden_pre``;
* ``jumprelu`` (also what SAELens saves a trained BatchTopK as):
  ``relu(hidden_pre) * (hidden_pre > threshold)``;
* ``gated``: ``(sae_in @ W_enc + b_gate > 0) * relu(sae_in @ (W_enc * exp(r_mag)) + b_mag)``;

and ``x_hat = (codes @ W_dec + b_dec) / s`` (+ ``x @ W_skip.T`` for skip transcoders).
``constant_norm_rescale`` and ``layer_norm`` normalise each token separately and
are refused, as is ``expected_average_only_in`` without its factor (SAELens takes
it from its pretrained directory; pass ``norm_scaling_factor=`` or add it to ``cfg.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..._errors import UniversalityError
from ._common import Provenance, build, fold_decoder_norms, fold_input_bias, need, read_json, read_tensors, scalar

ARCHITECTURES = ("standard", "relu", "topk", "batchtopk", "jumprelu", "gated", "transcoder", "skip_transcoder",
                 "jumprelu_transcoder", "jumprelu_skip_transcoder")


def matches(folder: Path) -> bool:
    """``cfg.json`` + ``sae_weights.safetensors``."""
    return (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file()


def _scale(cfg: dict[str, Any], src: str, norm_scaling_factor: float | None) -> float:
    norm = cfg.get("normalize_activations") or "none"
    if norm == "none":
        return 1.0
    if norm == "expected_average_only_in":
        factor = norm_scaling_factor if norm_scaling_factor is not None else cfg.get("norm_scaling_factor")
        if factor is None:
            raise UniversalityError(f"{src} uses normalize_activations='expected_average_only_in' without its norm_scaling_factor; "
                                    "pass norm_scaling_factor= (SAELens lists it in pretrained_saes.yaml) or add it to cfg.json")
        return scalar(factor, "norm_scaling_factor", src)
    raise UniversalityError(f"{src} uses normalize_activations='{norm}', a per-token normalisation no linear dictionary reproduces; "
                            "supported: 'none' and 'expected_average_only_in'")


def load(folder: Path, dtype: torch.dtype = torch.float32, norm_scaling_factor: float | None = None, **_: Any) -> tuple[Any, Provenance]:
    """A SAELens folder → coder computing SAELens' forward (see the module docstring)."""
    cfg = read_json(folder / "cfg.json")
    src = f"'{folder / 'cfg.json'}'"
    arch = cfg.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise UniversalityError(f"{src} has architecture '{arch}'; supported: {', '.join(ARCHITECTURES)}")
    act_fn = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    if act_fn not in ("relu", "topk"):
        raise UniversalityError(f"{src} uses activation_fn '{act_fn}'; only ReLU-based SAEs are read")
    if act_fn == "topk" and arch == "standard":  # SAELens < 6 wrote TopK SAEs as standard + activation_fn_str "topk"
        arch = "topk"
    s = _scale(cfg, src, norm_scaling_factor)
    wsrc = f"'{folder / 'sae_weights.safetensors'}'"
    t = read_tensors(folder / "sae_weights.safetensors")
    W_enc = need(t, "W_enc", (None, None), wsrc).t()  # [n, d_in]
    n, d_in = W_enc.shape
    W_dec = need(t, "W_dec", (n, None), wsrc)
    d_out = W_dec.shape[1]
    b_dec = need(t, "b_dec", (d_out,), wsrc)
    transcoder = "transcoder" in arch or d_out != d_in
    apply_b_dec = bool(cfg.get("apply_b_dec_to_input", not transcoder))
    if apply_b_dec and d_out != d_in:
        raise UniversalityError(f"{src} sets apply_b_dec_to_input with d_in={d_in} != d_out={d_out}; SAELens cannot run that either")
    # SAELens subtracts b_dec * apply_b_dec_to_input; ours subtracts b_dec for autoencoders and nothing for transcoders
    shift = (b_dec if not apply_b_dec else torch.zeros_like(b_dec)) if not transcoder else (-b_dec if apply_b_dec else None)
    meta: dict[str, Any] = dict(transcoder=transcoder, unit_norm_decoder=False, input_scale=s, output_scale=s)
    kind = {"standard": "relu", "relu": "relu", "transcoder": "relu", "skip_transcoder": "relu", "topk": "topk",
            "batchtopk": "batchtopk", "jumprelu": "jumprelu", "jumprelu_transcoder": "jumprelu",
            "jumprelu_skip_transcoder": "jumprelu", "gated": "gated"}[arch]
    if kind == "gated":
        b_gate = need(t, "b_gate", (n,), wsrc)
        r_mag = need(t, "r_mag", (n,), wsrc)
        b_mag = need(t, "b_mag", (n,), wsrc)
        if shift is not None:
            e_shift = W_enc @ shift
            b_gate, b_mag = b_gate + e_shift, b_mag + r_mag.exp() * e_shift
        state = {"W_enc": W_enc, "b_enc": b_gate, "W_dec": W_dec, "b_dec": b_dec, "r_mag": r_mag, "b_mag": b_mag}
    else:
        b_enc = need(t, "b_enc", (n,), wsrc)
        if kind == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
            W_enc, b_enc, W_dec, _ = fold_decoder_norms(W_enc, b_enc, W_dec)
        if shift is not None:
            b_enc = fold_input_bias(W_enc, b_enc, shift)
        state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if "skip" in arch:
        state["W_skip"] = need(t, "W_skip", (d_out, d_in), wsrc)
        meta["skip"] = True
    if kind == "topk":
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        meta["k"] = int(scalar(k, "k", src))
    elif kind == "jumprelu":
        # SAELens: relu(pre) * (pre > threshold); ours: pre * (pre > threshold), equal for threshold >= 0
        # (a threshold <= 0 acts as plain ReLU there, so it is kept just above 0)
        state["log_threshold"] = need(t, "threshold", (n,), wsrc).clamp_min(1e-30).log()
    elif kind == "batchtopk":
        thr = t.get("threshold", torch.zeros(())).double()
        if thr.numel() != 1:
            raise UniversalityError(f"tensor 'threshold' of {wsrc} has {thr.numel()} values; a BatchTopK folder holds one threshold")
        state["threshold"] = thr.reshape(())
        state["threshold_steps"] = torch.zeros((), dtype=torch.long)
        meta["k"] = int(scalar(cfg.get("k"), "k", src))
    coder = build(kind, state, wsrc, dtype, **meta)
    hook = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")
    return coder, Provenance("saelens", "saelens", str(folder), hook, None, False)


__all__ = ["ARCHITECTURES", "matches", "load"]
