"""The gated dictionary kind (Rajamanoharan et al. 2024): a gate decides which latents fire, a magnitude path how much.

Both paths share the encoder directions ``W_enc``; with ``x_c = x_n - b_dec``
(``x_n`` for transcoders) and ``e = x_c @ W_enc.T``:

* gate: latent ``i`` fires when ``e_i + b_enc_i > 0`` (``b_enc`` is the gate bias);
* magnitude: ``relu(exp(r_mag_i) * e_i + b_mag_i)``.

SAELens (``architecture: "gated"``: ``b_gate``, ``r_mag``, ``b_mag``) and
dictionary_learning (``GatedAutoEncoder``: ``gate_bias``, ``r_mag``,
``mag_bias``) store exactly these tensors; the loaders map them here.
Training minimises the squared error, an L1 penalty on ``relu(gate pre-activation)``
weighted by the decoder-row norms, and the auxiliary loss that reconstructs the
target from the gate path through a frozen copy of the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .coder import SparseCoder
from .config import CoderConfig, _check_number
from .kinds import _dense_step_out, _recon_loss
from .registry import register_kind


@dataclass
class GatedConfig(CoderConfig):
    """A gated dictionary: a Heaviside gate and a ReLU magnitude path sharing the encoder directions."""

    kind: str = "gated"
    """Always ``"gated"``."""
    unit_norm_decoder: bool | None = False
    """Keep decoder rows at unit norm; off by default, since the L1 penalty is weighted by the row norms."""
    l1_coefficient: float = 0.3
    """Weight of the L1 penalty on ``relu(gate pre-activation) * ||W_dec[i]||`` (normalised units)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_number(self, "l1_coefficient", 0, inclusive=True)


@register_kind
class GatedCoder(SparseCoder):
    """Gated SAE: ``codes = (pre > 0) * relu(exp(r_mag) * (pre - b_enc) + b_mag)`` with ``pre`` the gate pre-activation."""

    kind = "gated"
    config_class = GatedConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.r_mag = nn.Parameter(torch.zeros(cfg.n_latents))
        self.b_mag = nn.Parameter(torch.zeros(cfg.n_latents))

    def magnitude(self, pre: torch.Tensor) -> torch.Tensor:
        """Magnitude path [b, n] from gate pre-activations ``pre`` [b, n] (same encoder directions, own scale and bias)."""
        return torch.relu(self.r_mag.exp() * (pre - self.b_enc) + self.b_mag)

    def activate(self, pre):  # noqa: D102
        return (pre > 0).to(pre.dtype) * self.magnitude(pre)

    def training_step(self, xn, yn, dead, sparsity_scale):  # noqa: D102
        pre = self.preacts(xn)
        f = self.activate(pre)
        recon = f @ self.W_dec + self.b_dec + self.skip_term(xn)
        loss, sq = _recon_loss(recon, yn)
        gate_relu = pre.relu()
        l1 = (gate_relu * self.W_dec.norm(dim=1)).sum(1).mean() / yn.shape[1] ** 0.5
        # auxiliary reconstruction from the gate path through a frozen decoder (gradients reach the encoder only)
        aux_recon = gate_relu @ self.W_dec.detach() + self.b_dec.detach()
        aux = (aux_recon - yn).pow(2).sum() / (yn.shape[0] * yn.shape[1])
        loss = loss + sparsity_scale * self.cfg.l1_coefficient * l1 + aux
        out = _dense_step_out(loss, recon, sq, f)
        return out._replace(aux=float(aux.detach()))


__all__ = ["GatedConfig", "GatedCoder"]
