"""dictionary_learning (saprmarks, used by nnsight users) folders: ``ae.pt`` + ``config.json``.

``training.py`` writes ``config.json`` as ``{"trainer": {"dict_class": ..., "k": ...,
"layer": ..., "lm_name": ..., "submodule_name": ...}, "buffer": {...}}`` and the
final state dict as ``ae.pt`` (read here with ``torch.load(weights_only=True)``).
Per ``dict_class`` (inferred from the tensor names when absent):

* ``AutoEncoder``: ``encoder.weight`` [n, d], ``encoder.bias``, ``decoder.weight``
  [d, n], ``bias`` [d]; ``relu(encoder(x - bias))``, ``decoder(f) + bias``.
  Its ``from_pretrained`` normalises the decoder by default (columns to unit
  norm, the norms moved into the encoder); we do the same.
* ``AutoEncoderTopK``: plus ``b_dec`` and buffer ``k``; the ``k`` largest of
  ``relu(encoder(x - b_dec))`` (its default ``use_threshold=False``).
* ``BatchTopKSAE``: same tensors plus ``threshold``; inference keeps
  ``relu(pre)`` where it exceeds ``threshold`` (its default ``use_threshold=True``).
* ``JumpReluAutoEncoder``: ``W_enc`` [d, n], ``b_enc``, ``W_dec`` [n, d], ``b_dec``,
  ``threshold`` [n]; ``relu(pre * (pre > threshold))`` with ``pre = x @ W_enc + b_enc``
  (``b_dec`` not subtracted: ``apply_b_dec_to_input`` is False after ``from_pretrained``).
* ``GatedAutoEncoder``: ``encoder.weight`` (no bias), ``decoder.weight``,
  ``decoder_bias``, ``r_mag``, ``gate_bias``, ``mag_bias``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..._errors import UniversalityError
from ._common import Provenance, build, fold_decoder_norms, fold_input_bias, need, read_json, read_tensors, scalar

DICT_CLASSES = ("AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder", "GatedAutoEncoder")


def matches(folder: Path) -> bool:
    """``ae.pt`` (with or without ``config.json``)."""
    return (folder / "ae.pt").is_file()


def _dict_class(trainer: dict[str, Any], t: dict[str, torch.Tensor]) -> str:
    name = trainer.get("dict_class")
    if name:
        return str(name)
    if "gate_bias" in t:
        return "GatedAutoEncoder"
    if "W_enc" in t:
        return "JumpReluAutoEncoder"
    if "k" in t:
        return "BatchTopKSAE" if float(t.get("threshold", torch.tensor(-1.0))) >= 0 else "AutoEncoderTopK"
    return "AutoEncoder"


def load(folder: Path, dtype: torch.dtype = torch.float32, **_: Any) -> tuple[Any, Provenance]:
    """A dictionary_learning folder → coder computing that class's default ``encode``/``decode``."""
    cfg = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    trainer = cfg.get("trainer") or {}
    src = f"'{folder / 'ae.pt'}'"
    t = read_tensors(folder / "ae.pt")
    cls = _dict_class(trainer, t)
    if cls not in DICT_CLASSES:
        raise UniversalityError(f"'{folder / 'config.json'}' names dict_class '{cls}'; supported: {', '.join(DICT_CLASSES)}")
    meta: dict[str, Any] = dict(unit_norm_decoder=False)
    if cls == "JumpReluAutoEncoder":
        W_enc = need(t, "W_enc", (None, None), src).t()
        n, d = W_enc.shape
        b_dec = need(t, "b_dec", (d,), src)
        W_dec = need(t, "W_dec", (n, d), src)
        b_enc = fold_input_bias(W_enc, need(t, "b_enc", (n,), src), b_dec)
        thr = need(t, "threshold", (n,), src)
        state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "log_threshold": thr.clamp_min(1e-30).log()}
        kind = "jumprelu"
    elif cls == "GatedAutoEncoder":
        W_enc = need(t, "encoder.weight", (None, None), src)
        n, d = W_enc.shape
        state = {"W_enc": W_enc, "b_enc": need(t, "gate_bias", (n,), src), "W_dec": need(t, "decoder.weight", (d, n), src).t(),
                 "b_dec": need(t, "decoder_bias", (d,), src), "r_mag": need(t, "r_mag", (n,), src), "b_mag": need(t, "mag_bias", (n,), src)}
        kind = "gated"
    else:
        W_enc = need(t, "encoder.weight", (None, None), src)
        n, d = W_enc.shape
        b_enc = need(t, "encoder.bias", (n,), src)
        W_dec = need(t, "decoder.weight", (d, n), src).t()
        if cls == "AutoEncoder":
            W_enc, b_enc, W_dec, _ = fold_decoder_norms(W_enc, b_enc, W_dec)  # from_pretrained(normalize_decoder=True)
            state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": need(t, "bias", (d,), src)}
            kind = "relu"
        else:
            state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": need(t, "b_dec", (d,), src)}
            k = t["k"].item() if "k" in t else trainer.get("k")
            meta["k"] = int(scalar(k, "k", src))
            kind = "topk" if cls == "AutoEncoderTopK" else "batchtopk"
            if kind == "batchtopk":
                state["threshold"] = t.get("threshold", torch.tensor(-1.0)).double().reshape(())
                state["threshold_steps"] = torch.zeros((), dtype=torch.long)
    coder = build(kind, state, src, dtype, **meta)
    hook = trainer.get("submodule_name")
    return coder, Provenance("dictionary_learning", "dictionary_learning", str(folder), hook, None, False)


__all__ = ["DICT_CLASSES", "matches", "load"]
