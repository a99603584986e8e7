"""Sharded on-disk activation store: extraction (resumable, checksummed) and streaming reads.

``cache_activations(host, hooks, stream, out_dir)`` writes a store;
``ActivationStore(out_dir)`` reads it (``.batches``, ``.chunks``, ``.read``, ``.gather``,
``.tokens``, ``.mask``, ``.manifest``); ``paired_chunks`` pairs the rows of two stores.
"""

from .cache import CacheConfig, cache_activations
from .fingerprint import host_fingerprint
from .store import ActivationStore, paired_chunks

__all__ = ["ActivationStore", "CacheConfig", "cache_activations", "host_fingerprint", "paired_chunks"]
