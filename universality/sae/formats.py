"""Saving and loading dictionaries: our own folder format here; every other library's layout in :mod:`.loaders`.

Our format is a folder with a JSON config and a safetensors file; nothing is
ever unpickled.

* own: ``cfg.json`` (``"format": "universality.sae"`` plus every field of
  the kind's config) + ``sae.safetensors`` (``W_enc``, ``b_enc``, ``W_dec``,
  ``b_dec``, optional ``W_skip`` and the kind's extra tensors). Loading builds
  the config class registered for the saved ``kind`` and ignores keys it does
  not know, so folders written when every kind shared one flat config (with
  ``k``, ``l1_coefficient``, ... in every file) still load.
* every other layout (SAELens, sparsify, lm_saes / Llama Scope,
  dictionary_learning, circuit-tracer): :mod:`universality.sae.loaders`;
  writing SAELens and sparsify folders: :mod:`universality.sae.export`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_save_tensors, atomic_write_json, ensure_writable_dir

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


def detect_format(path: str | os.PathLike) -> str:
    """Name of the layout of a dictionary folder (``"universality"``, ``"sparsify"``, ``"saelens"``, ``"lm_saes-v1"``, ...; see
    :data:`universality.sae.loaders.LAYOUTS`); one sentence naming every layout tried otherwise."""
    from .loaders import detect_layout

    return detect_layout(path).name


def load(path: str | os.PathLike, device: str = "cpu", **options: Any) -> "SparseCoder":
    """Load a dictionary folder of any supported layout onto ``device`` (see :func:`universality.sae.loaders.load` for ``options``)."""
    from .loaders import load as _load

    return _load(path, device, **options)
