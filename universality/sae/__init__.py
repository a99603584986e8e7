"""Sparse dictionaries: SAE kinds (TopK, BatchTopK, ReLU-L1, JumpReLU), transcoders, a multi-dictionary trainer, formats.

Short path::

    from universality import sae
    coder = sae.fit(x, kind="topk", n_latents=4096, k=32, seed=0)   # x: [n, d] tensor or an activation store
    codes = coder.encode(x)                                          # [n, n_latents]
    coder.save("out/sae"); coder = sae.load("out/sae")               # also reads sparsify / SAELens folders

Long path: :class:`TrainerConfig` with several :class:`CoderConfig` trained from
the same batches by :class:`Trainer`. Evaluation: :func:`evaluate` (FVU, L0,
dead/dense fractions) and :func:`evaluate_lm_loss` (loss with the dictionary spliced in).
"""

from . import kinds as _kinds  # noqa: F401  (registers the kinds)
from .coder import SparseCoder, build_coder, coder_class, register_kind, registered_kinds
from .config import CoderConfig, TrainerConfig
from .formats import detect_format, load, save
from .kinds import BatchTopKCoder, JumpReLUCoder, ReLUCoder, TopKCoder
from .metrics import LMLoss, Metrics, evaluate, evaluate_lm_loss
from .source import BatchStream
from .trainer import Trainer, TrainResult, fit, geometric_median

__all__ = [
    "SparseCoder", "TopKCoder", "BatchTopKCoder", "ReLUCoder", "JumpReLUCoder",
    "CoderConfig", "TrainerConfig", "Trainer", "TrainResult", "BatchStream",
    "fit", "load", "save", "detect_format", "evaluate", "evaluate_lm_loss", "Metrics", "LMLoss",
    "build_coder", "coder_class", "register_kind", "registered_kinds", "geometric_median",
]
