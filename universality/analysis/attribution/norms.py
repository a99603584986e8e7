"""Norms with their scale frozen at the clean run: affine in their input, equal to the real norm on the clean input.

A LayerNorm ``(x - mean x) / sqrt(var x + eps) * w + b`` and an RMS norm
``x / sqrt(mean x² + eps) * w`` both become ``center(x) * s_clean * w (+ b)``, with
``s_clean`` [t, 1] the reciprocal scale of the clean run's input. Centring is linear
and stays; the division is what makes a norm nonlinear, and it is what is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..._errors import UniversalityError


@dataclass
class FrozenNorm:
    """One norm of the replacement model.

    Attributes:
        scale: reciprocal scale of the clean input, ``[t, 1]`` (or ``[1]`` per position when sliced).
        weight: the norm's gain ``[d]``.
        bias: its shift ``[d]`` or ``None`` (RMS norms).
        centred: whether the mean is subtracted (LayerNorm) or not (RMS norm).
    """

    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    centred: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen norm of ``x`` ``[..., t, d]`` (positions aligned with the clean run's)."""
        if self.centred:
            x = x - x.mean(-1, keepdim=True)
        y = x * self.scale * self.weight
        return y + self.bias if self.bias is not None else y

    def last(self) -> "FrozenNorm":
        """The same norm for the last position only (input ``[..., 1, d]`` or ``[..., d]`` with scale ``[1]``)."""
        return FrozenNorm(self.scale[-1], self.weight, self.bias, self.centred)


def norm_parts(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float, bool]:
    """(weight, bias, eps, centred) of a LayerNorm or an RMS norm module (Llama, Qwen2, Mamba style).

    Raises :class:`UniversalityError` for any other kind of norm.
    """
    if isinstance(module, nn.LayerNorm):
        if module.weight is None:
            raise UniversalityError("attribution needs LayerNorms with a gain (elementwise_affine=True)")
        return module.weight, module.bias, float(module.eps), True
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if isinstance(weight, torch.Tensor) and eps is not None:
        return weight, None, float(eps), False
    raise UniversalityError(f"attribution cannot freeze a norm of type {type(module).__name__}; "
                            "supported are torch LayerNorm and RMS norms with `weight` and `variance_epsilon`")


def freeze_norm(weight: torch.Tensor, bias: torch.Tensor | None, eps: float, centred: bool, clean_input: torch.Tensor,
                dtype: torch.dtype) -> FrozenNorm:
    """The frozen norm whose scale is read off ``clean_input`` ``[t, d]`` (computed in ``dtype``)."""
    x = clean_input.to(dtype)
    if centred:
        x = x - x.mean(-1, keepdim=True)
    scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return FrozenNorm(scale, weight.detach().to(dtype), bias.detach().to(dtype) if bias is not None else None, centred)


def freeze_module_norm(module: nn.Module, clean_input: torch.Tensor, dtype: torch.dtype) -> FrozenNorm:
    """:func:`freeze_norm` for a norm module (see :func:`norm_parts`)."""
    weight, bias, eps, centred = norm_parts(module)
    return freeze_norm(weight, bias, eps, centred, clean_input, dtype)
