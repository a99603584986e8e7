"""Typed configurations: one dictionary (:class:`CoderConfig` and one subclass per kind) and one training run (:class:`TrainerConfig`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._errors import UniversalityError

from . import registry

B_DEC_INITS = ("geometric_median", "mean", "zeros")


def _check_number(cfg: Any, name: str, low: float, inclusive: bool) -> None:
    """Raise unless ``cfg.<name>`` is a finite number ``>= low`` (``inclusive``) or ``> low``."""
    v = getattr(cfg, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= low if inclusive else v > low)
    if not ok:
        raise UniversalityError(f"{name}={v!r} is not valid; it must be a finite number {'>=' if inclusive else '>'} {low:g}")


@dataclass
class CoderConfig:
    """Shape of one sparse dictionary (autoencoder or transcoder): the settings every kind shares.

    Each kind has its own subclass with its own settings (:class:`TopKConfig`,
    :class:`ReLUConfig`, ... or a kind registered elsewhere). Calling
    ``CoderConfig(kind="relu", ...)`` builds the registered config class of that
    kind (here :class:`ReLUConfig`), so the base class also works as a factory;
    a setting the kind does not have is an error naming the kind's settings.
    """

    kind: str = "topk"
    """Registered dictionary kind (see :func:`universality.sae.registered_kinds`): built in are ``"topk"``, ``"batchtopk"``, ``"relu"`` and ``"jumprelu"``."""
    d_in: int = 0
    """Width of the input activations."""
    n_latents: int = 4096
    """Number of dictionary latents."""
    d_out: int | None = None
    """Width of the reconstruction target; ``None`` means ``d_in`` (an autoencoder)."""
    transcoder: bool = False
    """Whether the dictionary maps an input hook to a different output target (the encoder does not subtract ``b_dec``)."""
    skip: bool = False
    """Add an affine skip connection ``x @ W_skip.T`` to the reconstruction (skip transcoders)."""
    unit_norm_decoder: bool | None = None
    """Keep decoder rows at unit norm (gradient's parallel part removed); ``None`` means yes (``relu`` defaults to no: its L1 is weighted by the row norms)."""
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
    host: str | None = None
    """Fingerprint of the host whose activations trained the dictionary (metadata; attribution refuses another host's)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "CoderConfig":
        """Pick the kind's registered config class (when called on the base class) and check the setting names."""
        kind = kwargs.get("kind", args[0] if args else None)
        if cls is CoderConfig:
            target = registry.config_class(kind if kind is not None else "topk")
        else:
            target = cls
        unknown = sorted(set(kwargs) - {f.name for f in fields(target)})
        if unknown:
            valid = ", ".join(f.name for f in fields(target))
            raise UniversalityError(f"{', '.join(unknown)} is not a setting of dictionary kind '{kind or target.kind}'; its settings are {valid}")
        return object.__new__(target)

    def __getnewargs_ex__(self) -> tuple[tuple, dict[str, Any]]:
        """Arguments :meth:`__new__` needs to rebuild this class on unpickling (its kind)."""
        return (), {"kind": self.kind}

    def __post_init__(self) -> None:
        entry = registry.lookup(self.kind)
        if entry.config_class is not type(self):
            raise UniversalityError(f"kind '{self.kind}' is configured by {entry.config_class.__name__}, not {type(self).__name__}; use that class or CoderConfig(kind='{self.kind}', ...)")
        for name in ("d_in", "n_latents"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise UniversalityError(f"{name}={v!r} is not valid; it must be a positive integer")
        if self.d_out is None:
            self.d_out = self.d_in
        if not isinstance(self.d_out, int) or isinstance(self.d_out, bool) or self.d_out <= 0:
            raise UniversalityError(f"d_out={self.d_out!r} is not valid; it must be a positive integer or None")
        if self.d_out != self.d_in and not self.transcoder:
            raise UniversalityError(f"d_out={self.d_out} differs from d_in={self.d_in}; set transcoder=True for a different target")
        for name in ("input_scale", "output_scale"):
            _check_number(self, name, 0, inclusive=False)
        if self.unit_norm_decoder is None:
            self.unit_norm_decoder = True

    def own_settings(self) -> dict[str, Any]:
        """The settings of this kind that the shared :class:`CoderConfig` does not have (e.g. ``{"k": 32, ...}`` for TopK)."""
        shared = {f.name for f in fields(CoderConfig)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in shared}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (the shared ones and the kind's own)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CoderConfig":
        """Build from a dict, ignoring keys the kind's config does not know (other kinds' settings, newer fields).

        On the base class the dict's ``kind`` (default ``"topk"``) picks the config class.
        """
        target = registry.config_class(d.get("kind", "topk")) if cls is CoderConfig else cls
        names = {f.name for f in fields(target)}
        return target(**{k: v for k, v in d.items() if k in names})


@dataclass
class TopKConfig(CoderConfig):
    """A TopK dictionary: ``k`` active latents per token, with the AuxK loss reviving dead latents."""

    kind: str = "topk"
    """Always ``"topk"``."""
    k: int = 32
    """Active latents per token (0 < k < n_latents)."""
    aux_k: int | None = None
    """Dead latents used by the AuxK loss per token; ``None`` means ``d_in // 2`` (at most ``n_latents``)."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (0 switches it off)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.k, int) and not isinstance(self.k, bool) and 0 < self.k < self.n_latents):
            raise UniversalityError(f"k={self.k!r} is not valid for n_latents={self.n_latents}; use 0 < k < n_latents")
        if self.aux_k is None:
            self.aux_k = max(1, min(self.d_in // 2, self.n_latents))
        if not isinstance(self.aux_k, int) or isinstance(self.aux_k, bool) or self.aux_k <= 0:
            raise UniversalityError(f"aux_k={self.aux_k!r} is not valid; it must be a positive integer or None")
        _check_number(self, "aux_coefficient", 0, inclusive=True)


@dataclass
class BatchTopKConfig(TopKConfig):
    """A BatchTopK dictionary: ``k * batch`` active latents per batch in training, a learned threshold at inference."""

    kind: str = "batchtopk"
    """Always ``"batchtopk"``."""


@dataclass
class ReLUConfig(CoderConfig):
    """A ReLU dictionary with an L1 penalty weighted by the decoder-row norms."""

    kind: str = "relu"
    """Always ``"relu"``."""
    unit_norm_decoder: bool | None = False
    """Keep decoder rows at unit norm; off by default, since the L1 penalty is weighted by the row norms instead."""
    l1_coefficient: float = 0.3
    """Weight of the L1 penalty ``sum_i f_i * ||W_dec[i]||`` added to the per-token squared error (in normalised units)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_number(self, "l1_coefficient", 0, inclusive=True)


@dataclass
class JumpReLUConfig(CoderConfig):
    """A JumpReLU dictionary: one learned threshold per latent, trained with a straight-through L0 penalty."""

    kind: str = "jumprelu"
    """Always ``"jumprelu"``."""
    l0_coefficient: float = 0.05
    """Weight of the straight-through L0 penalty (in normalised units)."""
    jump_bandwidth: float = 0.1
    """Width of the rectangle kernel of the straight-through threshold gradient (> 0)."""
    jump_init_threshold: float = 0.3
    """Initial threshold of every latent (> 0)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_number(self, "l0_coefficient", 0, inclusive=True)
        for name in ("jump_bandwidth", "jump_init_threshold"):
            _check_number(self, name, 0, inclusive=False)


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
        self.coders = [c if isinstance(c, CoderConfig) else CoderConfig(**c) for c in self.coders]
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
