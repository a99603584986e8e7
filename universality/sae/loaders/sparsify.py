"""EleutherAI sparsify folders: one hookpoint (``cfg.json`` + ``sae.safetensors``) or a run's multi-hookpoint layout.

``SparseCoder.save_to_disk`` writes ``cfg.json`` (the ``SparseCoderConfig`` fields
``activation``, ``expansion_factor``, ``normalize_decoder``, ``num_latents``,
``k``, ``multi_topk``, ``skip_connection``, ``transcode``, plus ``d_in``) and
``sae.safetensors`` (``encoder.weight`` [n, d_in], ``encoder.bias``, ``W_dec``
[n, d_out], ``b_dec`` [d_out], ``W_skip`` [d_out, d_in] for skip transcoders).
A training run saves one such sub-folder per hookpoint, named after it
(``layers.3``, ``layers.3.mlp``; ``SparseCoder.load_many`` reads them all).
sparsify's forward: ``codes = topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias), k)``
(``b_dec`` not subtracted for transcoders), ``y = codes @ W_dec + b_dec (+ x @ W_skip.T)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..._errors import UniversalityError
from ._common import Provenance, build, need, read_json, read_tensors, scalar

OWN_MARKER = "universality.sae"


def matches(folder: Path) -> bool:
    """``cfg.json`` (not ours) + ``sae.safetensors``."""
    if not ((folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file()):
        return False
    return read_json(folder / "cfg.json").get("format") != OWN_MARKER


def hookpoint_folders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that are single-hookpoint sparsify folders, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and matches(p)), key=lambda p: p.name)


def matches_multi(folder: Path) -> bool:
    """No ``cfg.json`` of its own, at least one sub-folder per hookpoint."""
    return not (folder / "cfg.json").is_file() and bool(hookpoint_folders(folder))


def load(folder: Path, dtype: torch.dtype = torch.float32, **_: Any) -> tuple[Any, Provenance]:
    """A single-hookpoint sparsify folder → TopK coder computing sparsify's forward."""
    cfg = read_json(folder / "cfg.json")
    src = f"'{folder / 'cfg.json'}'"
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise UniversalityError(f"{src} uses activation '{activation}'; only 'topk' is read (groupmax picks one latent per group)")
    wsrc = f"'{folder / 'sae.safetensors'}'"
    t = read_tensors(folder / "sae.safetensors")
    d_in = int(cfg["d_in"]) if "d_in" in cfg else None
    W_enc = need(t, "encoder.weight", (None, d_in), wsrc)
    n, d_in = W_enc.shape
    W_dec = need(t, "W_dec", (n, None), wsrc)
    d_out = W_dec.shape[1]
    state = {"W_enc": W_enc, "b_enc": need(t, "encoder.bias", (n,), wsrc), "W_dec": W_dec, "b_dec": need(t, "b_dec", (d_out,), wsrc)}
    skip = "W_skip" in t
    if skip:
        state["W_skip"] = need(t, "W_skip", (d_out, d_in), wsrc)
    transcode = bool(cfg.get("transcode", False)) or d_out != d_in
    k = int(scalar(cfg.get("k", 32), "k", src))
    if k > n:
        raise UniversalityError(f"k={k} in {src} exceeds the {n} latents of {wsrc}")
    coder = build("topk", state, wsrc, dtype, k=k, transcoder=transcode, skip=skip, unit_norm_decoder=bool(cfg.get("normalize_decoder", True)))
    return coder, Provenance("sparsify", "sparsify", str(folder), folder.name, None, False)


__all__ = ["matches", "matches_multi", "hookpoint_folders", "load"]
