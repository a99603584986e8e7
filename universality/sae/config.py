"""Typed configurations: one dictionary (:class:`CoderConfig`) and one training run (:class:`TrainerConfig`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._errors import UniversalityError

KINDS = ("topk", "batchtopk", "relu", "jumprelu")
B_DEC_INITS = ("geometric_median", "mean", "zeros")


@dataclass
class CoderConfig:
    """Shape and sparsity mechanism of one sparse dictionary (autoencoder or transcoder)."""

    kind: str = "topk"
    """Activation: ``"topk"`` (with AuxK), ``"batchtopk"`` (learned inference threshold), ``"relu"`` (L1 weighted by decoder-row norms) or ``"jumprelu"`` (learned thresholds, straight-through L0)."""
    d_in: int = 0
    """Width of the input activations."""
    n_latents: int = 4096
    """Number of dictionary latents."""
    k: int = 32
    """Active latents per token for ``topk``/``batchtopk`` (the batch keeps ``k * batch`` in ``batchtopk``)."""
    d_out: int | None = None
    """Width of the reconstruction target; ``None`` means ``d_in`` (an autoencoder)."""
    transcoder: bool = False
    """Whether the dictionary maps an input hook to a different output target (the encoder does not subtract ``b_dec``)."""
    skip: bool = False
    """Add an affine skip connection ``x @ W_skip.T`` to the reconstruction (skip transcoders)."""
    l1_coefficient: float = 0.3
    """``relu`` only: weight of the L1 penalty ``sum_i f_i * ||W_dec[i]||`` added to the per-token squared error (in normalised units)."""
    l0_coefficient: float = 0.05
    """``jumprelu`` only: weight of the straight-through L0 penalty (in normalised units)."""
    jump_bandwidth: float = 0.1
    """``jumprelu`` only: width of the rectangle kernel of the straight-through threshold gradient."""
    jump_init_threshold: float = 0.3
    """``jumprelu`` only: initial threshold of every latent."""
    aux_k: int | None = None
    """Dead latents used by the AuxK loss per token; ``None`` means ``d_in // 2`` (topk and batchtopk)."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (0 switches it off)."""
    unit_norm_decoder: bool | None = None
    """Keep decoder rows at unit norm (gradient's parallel part removed); ``None`` means yes except for ``relu``, whose L1 is weighted by the row norms instead."""
    seed: int = 0
    """Seed of the parameter initialisation."""
    input_scale: float = 1.0
    """Multiplier that normalises the input (set by the trainer so that the mean squared norm is ``d_in``)."""
    output_scale: float = 1.0
    """Multiplier that normalises the target (equal to ``input_scale`` for autoencoders)."""
    hook: str | None = None
    """Hook point the dictionary was trained on (metadata, used by LM-loss evaluation)."""
    target_hook: str | None = None
    """Hook point of a transcoder's target (metadata)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UniversalityError(f"kind '{self.kind}' is not a known dictionary kind; use one of {', '.join(KINDS)}")
        for name in ("d_in", "n_latents"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise UniversalityError(f"{name}={v!r} is not valid; it must be a positive integer")
        if self.d_out is None:
            self.d_out = self.d_in
        if not isinstance(self.d_out, int) or self.d_out <= 0:
            raise UniversalityError(f"d_out={self.d_out!r} is not valid; it must be a positive integer or None")
        if self.d_out != self.d_in and not self.transcoder:
            raise UniversalityError(f"d_out={self.d_out} differs from d_in={self.d_in}; set transcoder=True for a different target")
        if self.kind in ("topk", "batchtopk") and not (isinstance(self.k, int) and 0 < self.k < self.n_latents):
            raise UniversalityError(f"k={self.k!r} is not valid for n_latents={self.n_latents}; use 0 < k < n_latents")
        if self.aux_k is None:
            self.aux_k = max(1, min(self.d_in // 2, self.n_latents))
        if self.aux_k <= 0:
            raise UniversalityError(f"aux_k={self.aux_k} is not valid; it must be positive")
        for name in ("l1_coefficient", "l0_coefficient", "aux_coefficient"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise UniversalityError(f"{name}={v!r} is not valid; it must be a finite number >= 0")
        for name in ("jump_bandwidth", "jump_init_threshold", "input_scale", "output_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UniversalityError(f"{name}={v!r} is not valid; it must be a finite number > 0")
        if self.unit_norm_decoder is None:
            self.unit_norm_decoder = self.kind != "relu"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CoderConfig":
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainerConfig:
    """One training run: several dictionaries trained from the same batches in one pass."""

    coders: list[CoderConfig] = field(default_factory=list)
    """The dictionaries to train (different seeds, sizes or kinds); their ``d_in`` must match the data."""
    batch_size: int = 4096
    """Tokens per optimisation step."""
    n_tokens: int | None = None
    """Training tokens; ``None`` means one pass over a stream, or for an in-memory tensor ``max(n, 300 * batch_size)``."""
    lr: float | None = None
    """Adam learning rate; ``None`` means ``2e-4 / sqrt(n_latents / 16384)`` per dictionary."""
    warmup_fraction: float = 0.02
    """Fraction of steps with a linear learning-rate warm-up from 0."""
    decay_fraction: float = 0.2
    """Fraction of final steps with a linear decay of the learning rate to 0."""
    sparsity_warmup_fraction: float = 0.05
    """Fraction of steps over which the L1/L0 penalty ramps linearly up from 0 (relu, jumprelu)."""
    b_dec_init: str = "geometric_median"
    """Initial ``b_dec``: ``"geometric_median"`` or ``"mean"`` of the first batch, or ``"zeros"``."""
    normalize: bool = True
    """Scale inputs (and targets) so their mean squared norm equals their width; the scale is stored with the dictionary."""
    dead_window_tokens: int = 1_000_000
    """A latent that has not fired in this many tokens counts as dead (AuxK, logging)."""
    seed: int = 0
    """Seed of the data order (the shuffle of an in-memory tensor or store)."""
    device: str = "auto"
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    log_every: int = 20
    """Steps between progress-bar metric updates."""
    checkpoint_dir: str | None = None
    """Folder for periodic checkpoints; a run started again with the same folder resumes from the latest."""
    checkpoint_every: int = 200
    """Steps between checkpoints (when ``checkpoint_dir`` is set)."""
    hook: str | None = None
    """Hook point of the activations (metadata stored with every dictionary)."""

    def __post_init__(self) -> None:
        self.coders = [c if isinstance(c, CoderConfig) else CoderConfig.from_dict(c) for c in self.coders]
        if not self.coders:
            raise UniversalityError("coders is empty; give at least one CoderConfig")
        if not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise UniversalityError(f"batch_size={self.batch_size!r} is not valid; it must be a positive integer")
        if self.n_tokens is not None and not (isinstance(self.n_tokens, int) and self.n_tokens > 0):
            raise UniversalityError(f"n_tokens={self.n_tokens!r} is not valid; it must be a positive integer or None")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UniversalityError(f"lr={self.lr!r} is not valid; it must be a positive number or None")
        for name in ("warmup_fraction", "decay_fraction", "sparsity_warmup_fraction"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise UniversalityError(f"{name}={v!r} is not valid; it must lie in [0, 1]")
        if self.warmup_fraction + self.decay_fraction > 1:
            raise UniversalityError("warmup_fraction + decay_fraction exceeds 1; lower one of them")
        if self.b_dec_init not in B_DEC_INITS:
            raise UniversalityError(f"b_dec_init '{self.b_dec_init}' is not valid; use one of {', '.join(B_DEC_INITS)}")
        for name in ("dead_window_tokens", "log_every", "checkpoint_every"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v > 0):
                raise UniversalityError(f"{name}={v!r} is not valid; it must be a positive integer")
        d_ins = {c.d_in for c in self.coders}
        d_outs = {c.d_out for c in self.coders}
        if len(d_ins) > 1 or len(d_outs) > 1:
            raise UniversalityError(f"coders disagree on d_in/d_out ({sorted(d_ins)} / {sorted(d_outs)}); one run trains on one pair of activations")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (coders as dicts)."""
        d = asdict(self)
        d["coders"] = [c.to_dict() for c in self.coders]
        return d
