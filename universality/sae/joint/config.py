"""Typed configurations of the joint (multi-model) dictionary kinds.

A joint dictionary works in the *concatenated* space of M models' activations:
an aligned row is ``[x_0 | x_1 | ... | x_{M-1}]`` of width ``d_in = sum(widths)``,
each block scaled by its model's ``model_scales`` entry so that every model carries
the same mean squared norm (``d_in / M``). Each config below is a
:class:`~universality.sae.config.CoderConfig` subclass (so the trainer, its
checkpoints and the registry treat it like any kind) plus :class:`JointConfig`'s
three fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..._errors import UniversalityError
from ..config import BatchTopKConfig, CoderConfig, ReLUConfig, TopKConfig


def _positive_ints(name: str, v) -> list[int]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in v):
        raise UniversalityError(f"{name}={v!r} is not valid; give one positive integer width per model")
    return [int(w) for w in v]


@dataclass
class JointConfig(CoderConfig):
    """Fields every joint kind adds to the shared dictionary settings (not a kind itself)."""

    widths: list[int] = field(default_factory=list)
    """Activation width ``d_m`` of each model, in order (at least two models); ``d_in`` is their sum."""
    model_names: list[str] = field(default_factory=list)
    """A name per model (default ``model0``, ``model1``, ...), used in labels and reports."""
    model_scales: list[float] = field(default_factory=list)
    """Multiplier of each model's raw activations (set by :func:`~universality.sae.fit_joint`; default 1 each)."""

    def __post_init__(self) -> None:
        kind = self.kind
        if not self.widths:
            raise UniversalityError(f"kind '{kind}' is a joint dictionary over several models; train it with sae.fit_joint(xs, kind='{kind}', ...)")
        self.widths = _positive_ints("widths", self.widths)
        m = len(self.widths)
        if m < 2:
            raise UniversalityError(f"a joint dictionary needs at least 2 models; got {m}")
        if not self.model_names:
            self.model_names = [f"model{i}" for i in range(m)]
        self.model_names = [str(n) for n in self.model_names]
        if len(self.model_names) != m or len(set(self.model_names)) != m:
            raise UniversalityError(f"model_names={self.model_names!r} is not valid; give {m} distinct names, one per model")
        if not self.model_scales:
            self.model_scales = [1.0] * m
        if len(self.model_scales) != m or not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in self.model_scales):
            raise UniversalityError(f"model_scales={self.model_scales!r} is not valid; give {m} positive finite numbers")
        self.model_scales = [float(s) for s in self.model_scales]
        total = sum(self.widths)
        if self.d_in in (0, None):
            self.d_in = total
        if self.d_in != total:
            raise UniversalityError(f"d_in={self.d_in} is not the sum of widths {self.widths} ({total}); leave d_in unset")
        if self.transcoder:
            raise UniversalityError("transcoder=True is not available for joint dictionaries; they reconstruct every model's own activations")
        super().__post_init__()

    @property
    def n_models(self) -> int:
        """Number of models M."""
        return len(self.widths)

    def blocks(self) -> list[slice]:
        """Column slice of each model's block in the concatenated space, in order."""
        out, lo = [], 0
        for w in self.widths:
            out.append(slice(lo, lo + w))
            lo += w
        return out


@dataclass
class CrosscoderConfig(JointConfig, BatchTopKConfig):
    """Crosscoder (Lindsey et al. 2024) with BatchTopK sparsity: one encoder over the concatenation, a decoder per model.

    Decoder rows are unit-norm over the concatenation (``sum_m ||d_m||² = 1``), so the
    per-model norms stay free to say which model a latent writes to.
    """

    kind: str = "crosscoder"
    """Always ``"crosscoder"``."""


@dataclass
class CrosscoderL1Config(JointConfig, ReLUConfig):
    """Crosscoder with a ReLU code and the published L1 penalty ``sum_i f_i * sum_m ||d_m,i||`` (the baseline with known artefacts)."""

    kind: str = "crosscoder_l1"
    """Always ``"crosscoder_l1"``."""
    unit_norm_decoder: bool | None = False
    """Keep decoder rows at unit norm; off, since the penalty is weighted by the per-model decoder norms instead."""
    l1_coefficient: float = 1.0
    """Weight of the L1 penalty ``sum_i f_i sum_m ||d_m,i||`` (normalised units) added to the per-token squared error / d_in."""


USAE_SPARSITY = ("batchtopk", "topk")


@dataclass
class USAEConfig(JointConfig, BatchTopKConfig):
    """Universal SAE (Thasarathan et al. 2025): an encoder and a decoder per model around one shared sparse code.

    Each training step encodes the rows of one model (a seeded draw per step) and
    decodes into every model.
    """

    kind: str = "usae"
    """Always ``"usae"``."""
    sparsity: str = "batchtopk"
    """``"batchtopk"`` (``k`` per row on average over a batch, a learned threshold at inference; the default, as for
    crosscoders) or ``"topk"`` (exactly ``k`` per row, the paper's choice)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity not in USAE_SPARSITY:
            raise UniversalityError(f"sparsity={self.sparsity!r} is not valid for a universal SAE; use one of {', '.join(USAE_SPARSITY)}")


@dataclass
class PartitionedConfig(JointConfig, BatchTopKConfig):
    """Partitioned (dedicated-feature) crosscoder (Jiralerspong & Bricken 2026): a shared block and a block per model.

    Latents ``[0, n_shared)`` are shared; then come ``exclusive[0]`` latents that only
    read and write model 0, ``exclusive[1]`` for model 1, and so on. The other
    models' encoder and decoder columns of an exclusive latent are held at zero.
    """

    kind: str = "partitioned"
    """Always ``"partitioned"``."""
    exclusive: list[int] | None = None
    """Latents dedicated to each model; ``None`` means 10% of ``n_latents`` each (rounded down, at least 1)."""

    def __post_init__(self) -> None:
        n_models = len(self.widths) if isinstance(self.widths, (list, tuple)) else 0
        if self.exclusive is None and n_models:
            self.exclusive = [max(1, self.n_latents // 10)] * n_models
        super().__post_init__()
        ex = self.exclusive
        if not isinstance(ex, (list, tuple)) or len(ex) != self.n_models or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in ex):
            raise UniversalityError(f"exclusive={ex!r} is not valid; give {self.n_models} non-negative latent counts, one per model")
        self.exclusive = [int(e) for e in ex]
        if sum(self.exclusive) >= self.n_latents:
            raise UniversalityError(
                f"the partition exclusive={self.exclusive} uses {sum(self.exclusive)} latents, which does not fit n_latents={self.n_latents}; "
                "leave at least one latent for the shared block"
            )

    @property
    def n_shared(self) -> int:
        """Latents of the shared block."""
        return self.n_latents - sum(self.exclusive)

    def exclusive_rows(self) -> list[slice]:
        """Latent slice of each model's dedicated block, in order."""
        out, lo = [], self.n_shared
        for e in self.exclusive:
            out.append(slice(lo, lo + e))
            lo += e
        return out


__all__ = ["JointConfig", "CrosscoderConfig", "CrosscoderL1Config", "USAEConfig", "PartitionedConfig"]
