"""A host's fingerprint: architecture, config and the bytes of every weight, hashed.

Equal fingerprints mean the same function of the tokens, whatever the path the
model was loaded from; any changed weight changes it. :attr:`Host.fingerprint
<universality.hosts.base.Host.fingerprint>` caches the value and hashes the
weights again only when one of them was replaced or modified in place.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from .._io import fingerprint

_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash", "architectures")


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 hex digest of ``model``'s state dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_state_key(model: torch.nn.Module) -> tuple:
    """A cheap key that changes whenever a weight is replaced, moved or modified in place (storage pointer, version counter, dtype, shape)."""
    return tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in model.state_dict(keep_vars=True).items())


def compute_fingerprint(host: Any) -> str:
    """16-hex hash of ``host``'s ``arch``, ``model_type``, config (less volatile keys) and weights (:func:`weights_digest`); no caching."""
    cfg = host.config.to_dict() if hasattr(getattr(host, "config", None), "to_dict") else {}
    for key in _VOLATILE_CONFIG_KEYS:
        cfg.pop(key, None)
    return fingerprint({"arch": getattr(host, "arch", ""), "model_type": getattr(host, "model_type", ""),
                        "config": cfg, "weights": weights_digest(host.model)})


__all__ = ["compute_fingerprint", "weights_digest", "weights_state_key"]
