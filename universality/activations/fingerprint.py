"""Fingerprint of a host: architecture, config and every weight's bytes."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from .._io import fingerprint


def host_fingerprint(host: Any) -> str:
    """16-hex hash of ``host``'s model type, config and weights (names, dtypes, shapes, bytes).

    Equal fingerprints mean the same function of the tokens, whatever the path it
    was loaded from; any changed weight changes it.
    """
    h = hashlib.sha256()
    state = host.model.state_dict()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    cfg = host.config.to_dict() if hasattr(host.config, "to_dict") else {}
    for key in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash", "architectures"):
        cfg.pop(key, None)
    return fingerprint({"arch": getattr(host, "arch", ""), "model_type": getattr(host, "model_type", ""),
                        "config": cfg, "weights": h.hexdigest()})
