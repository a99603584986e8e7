"""Device resolution: ``"auto"`` means CUDA when available, else CPU."""

from __future__ import annotations

import torch

from ._errors import UniversalityError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` (or a torch.device) into a torch.device."""
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise UniversalityError(f"device '{device}' was asked for but CUDA is not available here; use 'cpu' or 'auto'")
        return torch.device(device)
    raise UniversalityError(f"device '{device}' is not valid; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
