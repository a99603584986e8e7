"""universality: do language models of different architectures, or seeds, learn the same features and circuits?

Submodules: ``hosts`` (hook vocabulary over Transformer, Mamba, RWKV), ``data``,
``activations``, ``sae``, ``matching``, ``analysis``, ``reports``, ``zoo``.
``uv.load_host`` is the entry point for models; ``uv.sae``, ``uv.matching`` and
``uv.analysis`` are imported on first use.
"""

from __future__ import annotations

import importlib

from ._errors import UniversalityError
from .hosts import Host, load_host, supported_model_types

__version__ = "0.1.0"
__all__ = ["Host", "UniversalityError", "load_host", "supported_model_types", "__version__"]

_LAZY = ("sae", "matching", "analysis", "data", "activations", "reports", "zoo", "cli")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'universality' has no attribute '{name}'")
