"""Host adapters: one hook vocabulary over Transformer, Mamba and RWKV checkpoints.

``load_host(name_or_path)`` dispatches on ``config.model_type``; every host exposes
``run_with_cache`` and ``run_with_hooks`` over the names in ``docs/design.md``.
"""

from .base import Host
from .hookrun import HookRun
from .loading import load_host
from .registry import register_host, supported_model_types

__all__ = ["Host", "HookRun", "load_host", "register_host", "supported_model_types"]
