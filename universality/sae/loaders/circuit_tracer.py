"""circuit-tracer transcoder sets: a YAML config + one weights file per layer.

The config (``circuit_tracer/configs/*.yaml``) names ``model_name``,
``feature_input_hook`` and ``feature_output_hook`` (TransformerLens hook names
relative to a block, e.g. ``hook_resid_mid`` → ``mlp.hook_out``) and lists
``transcoders`` as ``{id, layer, filepath}``. A local ``filepath`` is read
relative to the config's folder (``hf://`` URIs must be downloaded first).
Per-layer files:

* ``.safetensors`` (the ReLU transcoders): ``W_enc`` [d_sae, d_model],
  ``W_dec`` [d_sae, d_model], ``b_enc``, ``b_dec``, optional ``W_skip`` [d_model, d_model];
  ``acts = relu(x @ W_enc.T + b_enc)``, ``out = acts @ W_dec + b_dec (+ x @ W_skip.T)``;
* ``.npz`` (Gemma Scope transcoders): ``W_enc`` [d_model, d_sae], ``W_dec``
  [d_sae, d_model], ``b_enc``, ``b_dec``, ``threshold``; JumpReLU
  ``pre * (pre > threshold)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..._errors import UniversalityError
from ._common import Provenance, build, need, read_tensors


def config_file(path: Path) -> Path | None:
    """The YAML config at ``path`` (a file) or the single ``*.yaml``/``*.yml`` in folder ``path`` listing ``transcoders``."""
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return path
    if path.is_dir():
        found = [p for p in sorted(path.glob("*.y*ml")) if _is_config(p)]
        return found[0] if len(found) == 1 else None
    return None


def _is_config(p: Path) -> bool:
    try:
        text = p.read_text()
    except OSError:
        return False
    return "transcoders:" in text and "feature_input_hook" in text


def matches(path: Path) -> bool:
    """A YAML file (or a folder with exactly one) naming ``feature_input_hook`` and listing ``transcoders``."""
    return config_file(path) is not None


def _read_config(cfg_path: Path) -> dict[str, Any]:
    import yaml

    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as e:
        raise UniversalityError(f"'{cfg_path}' is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("transcoders"), list) or not cfg["transcoders"]:
        raise UniversalityError(f"'{cfg_path}' lists no transcoders; a circuit-tracer config has a 'transcoders' list of {{id, layer, filepath}}")
    for key in ("feature_input_hook", "feature_output_hook"):
        if not isinstance(cfg.get(key), str):
            raise UniversalityError(f"'{cfg_path}' lacks '{key}', the TransformerLens hook the transcoders read or write")
    return cfg


def _load_layer(file: Path, dtype: torch.dtype) -> Any:
    t = read_tensors(file)
    src = f"'{file}'"
    if file.suffix == ".npz":
        W_enc = need(t, "W_enc", (None, None), src).t()
        n, d = W_enc.shape
        state = {"W_enc": W_enc, "b_enc": need(t, "b_enc", (n,), src), "W_dec": need(t, "W_dec", (n, None), src),
                 "b_dec": need(t, "b_dec", (None,), src), "log_threshold": need(t, "threshold", (n,), src).clamp_min(1e-30).log()}
        return build("jumprelu", state, src, dtype, transcoder=True, unit_norm_decoder=False)
    if "log_thresholds" in t:
        raise UniversalityError(f"{src} holds 'log_thresholds'; circuit-tracer reads such files as ReLU transcoders only without them")
    W_enc = need(t, "W_enc", (None, None), src)
    n, d = W_enc.shape
    W_dec = need(t, "W_dec", (n, None), src)
    state = {"W_enc": W_enc, "b_enc": need(t, "b_enc", (n,), src), "W_dec": W_dec, "b_dec": need(t, "b_dec", (W_dec.shape[1],), src)}
    skip = t.get("W_skip") is not None
    if skip:
        state["W_skip"] = need(t, "W_skip", (W_dec.shape[1], d), src)
    return build("relu", state, src, dtype, transcoder=True, skip=skip, unit_norm_decoder=False)


def load_set(path: Path, dtype: torch.dtype = torch.float32, **_: Any) -> dict[str, tuple[Any, Provenance]]:
    """Every transcoder of the set, keyed by its ``id``, in layer order."""
    cfg_path = config_file(path)
    cfg = _read_config(cfg_path)
    out: dict[str, tuple[Any, Provenance]] = {}
    seen: set[int] = set()
    for entry in sorted(cfg["transcoders"], key=lambda e: int(e.get("layer", -1))):
        layer, fp = entry.get("layer"), str(entry.get("filepath", ""))
        if not isinstance(layer, int) or layer < 0 or layer in seen:
            raise UniversalityError(f"transcoder {entry.get('id')!r} in '{cfg_path}' has layer {layer!r}; give each layer once, as an integer >= 0")
        seen.add(layer)
        if fp.startswith("hf://"):
            raise UniversalityError(f"transcoder {entry.get('id')!r} in '{cfg_path}' points at '{fp}'; download it and give a local filepath")
        file = Path(fp) if Path(fp).is_absolute() else cfg_path.parent / fp
        coder = _load_layer(file, dtype)
        hook_in = f"blocks.{layer}.{cfg['feature_input_hook']}"
        hook_out = f"blocks.{layer}.{cfg['feature_output_hook']}"
        out[str(entry.get("id", f"layer_{layer}"))] = (coder, Provenance("circuit_tracer", "circuit_tracer", str(file), hook_in, hook_out, False))
    return out


__all__ = ["config_file", "matches", "load_set"]
