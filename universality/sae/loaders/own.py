"""Our own folder format: ``cfg.json`` (``"format": "universality.sae"`` + the kind's config) + ``sae.safetensors``.

Loading builds the config class registered for the saved ``kind`` and ignores
keys it does not know, so folders written when every kind shared one flat
config still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..._errors import UniversalityError
from .. import registry
from ..config import CoderConfig
from ._common import Provenance, read_json, read_tensors

FORMAT_NAME = "universality.sae"
FORMAT_VERSION = 1


def matches(folder: Path) -> bool:
    """``cfg.json`` whose ``format`` is ours."""
    return (folder / "cfg.json").is_file() and read_json(folder / "cfg.json").get("format") == FORMAT_NAME


def load(folder: Path, dtype: torch.dtype = torch.float32, **_: Any) -> tuple[Any, Provenance]:
    """Our folder → the coder that was saved (tensors bit for bit)."""
    cfg = read_json(folder / "cfg.json")
    if cfg.get("version", 0) > FORMAT_VERSION:
        raise UniversalityError(f"'{folder}' was written by a newer format version {cfg['version']}; this reader knows up to {FORMAT_VERSION}")
    coder = registry.coder_class(cfg.get("kind", "topk"))(CoderConfig.from_dict(cfg))
    tensors = read_tensors(folder / "sae.safetensors")
    missing = set(coder.state_dict()) - set(tensors)
    if missing:
        raise UniversalityError(f"'{folder / 'sae.safetensors'}' lacks tensors {sorted(missing)}; the folder is incomplete")
    for key, have in coder.state_dict().items():
        if tuple(tensors[key].shape) != tuple(have.shape):
            raise UniversalityError(f"tensor '{key}' of '{folder / 'sae.safetensors'}' has shape {list(tensors[key].shape)}; its cfg.json needs {list(have.shape)}")
    coder.load_state_dict({k: tensors[k] for k in coder.state_dict()}, strict=True)
    coder = coder.to(dtype) if dtype != torch.float32 else coder
    return coder.eval(), Provenance("universality", "universality", str(folder), coder.cfg.hook, coder.cfg.target_hook, False)


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "matches", "load"]
