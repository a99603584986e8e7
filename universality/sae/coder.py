"""The sparse dictionary module shared by every kind (kinds register in :mod:`universality.sae.registry`).

A dictionary maps an input ``x`` [..., d_in] to non-negative codes
[..., n_latents] and back to a reconstruction of the target [..., d_out]
(the input itself for an autoencoder). Internally it works in *normalised*
units: ``x * input_scale`` for the input and ``y * output_scale`` for the
target, the scales being stored with the dictionary, so ``encode``/``decode``
take and return raw activations.

Conventions (same as EleutherAI sparsify and SAELens):
``pre = (x_n - b_dec) @ W_enc.T + b_enc`` (``b_dec`` is not subtracted for
transcoders); ``recon_n = codes @ W_dec + b_dec (+ x_n @ W_skip.T)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from .._errors import UniversalityError
from . import registry
from .config import CoderConfig
from .formats import save as _save_folder
from .sparse_ops import Pairs, sparse_decode

def build_coder(cfg: CoderConfig) -> "SparseCoder":
    """A freshly initialised dictionary of kind ``cfg.kind`` (the registered coder class called with ``cfg``)."""
    return registry.coder_class(cfg.kind)(cfg)


class StepOut(NamedTuple):
    """What one training forward returns (normalised units)."""

    loss: torch.Tensor
    """Scalar to minimise."""
    recon: torch.Tensor
    """Reconstruction [b, d_out] (detached)."""
    sq_err: torch.Tensor
    """Summed squared error over the batch (detached scalar)."""
    l0: float
    """Mean active latents per token."""
    aux: float
    """AuxK loss value (0 when not used)."""
    fired: torch.Tensor
    """Ids of latents that fired in the batch (LongTensor; may repeat)."""


JOINT_INIT_STREAM = 0x6A6F696E  # "join"
"""Added to a joint dictionary's seed for its initial weights (see :func:`initial_weights_seed`)."""


def initial_weights_seed(seed: int, joint: bool) -> int:
    """The generator seed for a dictionary's initial weights.

    A joint dictionary's concatenated decoder ``[n_latents, sum d_m]`` drawn from the same stream as per-model
    dictionaries ``[n_latents, d_m]`` would start, row for row, as the concatenation of their rows (joint row ``J``
    = rows ``M*J .. M*J+M-1`` of equal-width per-model dictionaries), which couples the two after training. Joint
    kinds therefore draw from a stream of their own; every other kind keeps ``seed`` itself.
    """
    return (int(seed) + JOINT_INIT_STREAM) % (2**63) if joint else int(seed)


class SparseCoder(nn.Module):
    """Base of every dictionary kind: parameters, normalisation, encode/decode.

    Parameters: ``W_enc`` [n_latents, d_in], ``b_enc`` [n_latents],
    ``W_dec`` [n_latents, d_out], ``b_dec`` [d_out], and ``W_skip`` [d_out, d_in]
    when ``cfg.skip``. Subclasses define :meth:`activate` (pre-activations →
    dense codes at inference) and :meth:`training_step`.
    """

    kind: ClassVar[str] = ""
    """Registered kind name (see :func:`universality.sae.registry.register_kind`)."""
    config_class: ClassVar[type[CoderConfig]] = CoderConfig
    """The kind's config class (a :class:`CoderConfig` subclass whose ``kind`` defaults to :attr:`kind`)."""
    encoder_init_scale: ClassVar[float] = 1.0
    """Initial encoder rows are the decoder rows times this (autoencoders)."""

    def __init__(self, cfg: CoderConfig):
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(initial_weights_seed(int(cfg.seed), joint=bool(getattr(self, "joint", False))))
        W_dec = torch.randn(cfg.n_latents, cfg.d_out, generator=gen)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        if cfg.d_out == cfg.d_in and not cfg.transcoder:
            W_enc = W_dec * self.encoder_init_scale
        else:
            W_enc = torch.randn(cfg.n_latents, cfg.d_in, generator=gen)
            W_enc *= self.encoder_init_scale / W_enc.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents))
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out))
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_out, cfg.d_in)) if cfg.skip else None

    # ----- shapes and checks ----------------------------------------------------------
    @property
    def n_latents(self) -> int:
        """Number of latents."""
        return self.cfg.n_latents

    @property
    def d_in(self) -> int:
        """Input width."""
        return self.cfg.d_in

    @property
    def d_out(self) -> int:
        """Target width."""
        return self.cfg.d_out

    def _check_input(self, x: torch.Tensor, what: str = "x") -> None:
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.cfg.d_in:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UniversalityError(f"{what} has shape {shape}; this dictionary expects [..., {self.cfg.d_in}] (d_in)")

    # ----- normalised-space pieces ----------------------------------------------------
    def encoder_input(self, xn: torch.Tensor) -> torch.Tensor:
        """``x_n - b_dec`` for autoencoders, ``x_n`` for transcoders; [b, d_in]."""
        return xn if self.cfg.transcoder else xn - self.b_dec

    def preacts(self, xn: torch.Tensor) -> torch.Tensor:
        """Pre-activations [b, n_latents] of normalised inputs ``xn`` [b, d_in]."""
        return torch.addmm(self.b_enc, self.encoder_input(xn), self.W_enc.t())

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Inference activation: pre-activations [b, n] → codes [b, n] (dense, non-negative)."""
        raise NotImplementedError

    def skip_term(self, xn: torch.Tensor) -> torch.Tensor | float:
        """``x_n @ W_skip.T`` [b, d_out] for skip transcoders, else 0."""
        return xn @ self.W_skip.t() if self.W_skip is not None else 0.0

    def training_step(self, xn: torch.Tensor, yn: torch.Tensor, dead: torch.Tensor | None, sparsity_scale: float) -> StepOut:
        """Loss and statistics on a normalised batch ``xn`` [b, d_in] → target ``yn`` [b, d_out].

        ``dead`` [n_latents] bool marks latents silent over the dead window (AuxK);
        ``sparsity_scale`` in [0, 1] ramps the L1/L0 penalty up during warm-up.
        """
        raise NotImplementedError

    # ----- public, raw units ------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [..., n_latents] of raw activations ``x`` [..., d_in] (inference activation)."""
        self._check_input(x)
        lead = x.shape[:-1]
        xn = x.reshape(-1, self.cfg.d_in).to(self.W_enc.dtype) * self.cfg.input_scale
        return self.activate(self.preacts(xn)).reshape(*lead, self.cfg.n_latents)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Raw-unit reconstruction [..., d_out] of ``codes`` [..., n_latents] (without the skip term)."""
        if codes.shape[-1] != self.cfg.n_latents:
            raise UniversalityError(f"codes have {codes.shape[-1]} latents; this dictionary has {self.cfg.n_latents}")
        lead = codes.shape[:-1]
        flat = codes.reshape(-1, self.cfg.n_latents).to(self.W_dec.dtype)
        nnz = int(torch.count_nonzero(flat)) if flat.numel() >= 1 << 16 else flat.numel()
        if nnz * 16 < flat.numel():
            # sparse codes: sum the active decoder rows instead of a dense matmul
            rows, cols = flat.nonzero(as_tuple=True)
            out = sparse_decode(Pairs(rows, cols, flat.shape[0], self.cfg.n_latents), flat[rows, cols], self.W_dec)
        else:
            out = flat @ self.W_dec
        return ((out + self.b_dec) / self.cfg.output_scale).reshape(*lead, self.cfg.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw-unit reconstruction [..., d_out] of ``x`` [..., d_in], including the skip term."""
        codes = self.encode(x)
        out = self.decode(codes)
        if self.W_skip is not None:
            out = out + (x.to(self.W_skip.dtype) * self.cfg.input_scale) @ self.W_skip.t() / self.cfg.output_scale
        return out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Same as calling the module: reconstruction [..., d_out] of ``x`` [..., d_in]."""
        return self(x)

    # ----- training hooks -------------------------------------------------------------
    def after_step(self) -> None:
        """Called after every optimiser step (decoder renormalisation)."""
        if self.cfg.unit_norm_decoder:
            with torch.no_grad():
                self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def before_step(self) -> None:
        """Called after backward, before the optimiser step: remove the decoder gradient parallel to its rows."""
        if self.cfg.unit_norm_decoder and self.W_dec.grad is not None:
            with torch.no_grad():
                w, g = self.W_dec, self.W_dec.grad
                g.addcmul_(w, torch.linalg.vecdot(g, w).unsqueeze(1), value=-1)

    def save(self, path) -> "Path":
        """Write the dictionary to folder ``path`` (``cfg.json`` + ``sae.safetensors``); see :func:`universality.sae.load`."""
        return _save_folder(self, path)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer by name (what is saved)."""
        return {k: v.detach() for k, v in self.state_dict().items()}

    def extra_repr(self) -> str:
        """One line for ``repr``: kind, shape and the kind's own settings."""
        c = self.cfg
        own = "".join(f", {k}={v}" for k, v in c.own_settings().items())
        return f"kind={c.kind}, d_in={c.d_in}, n_latents={c.n_latents}, d_out={c.d_out}{own}"
