"""Sparse dictionaries: SAE kinds (TopK, BatchTopK, ReLU-L1, JumpReLU), transcoders, a multi-dictionary trainer, formats.

Short path::

    from universality import sae
    coder = sae.fit(x, kind="topk", n_latents=4096, k=32, seed=0)   # x: [n, d] tensor or an activation store
    codes = coder.encode(x)                                          # [n, n_latents]
    coder.save("out/sae"); coder = sae.load("out/sae")               # also SAELens, sparsify, Llama Scope, dictionary_learning, circuit-tracer

Loaders (:mod:`.loaders`, ``docs/loaders.md``) read every major library's layout
exactly as its authors compute it; :func:`to_saelens` / :func:`to_sparsify` write ours in theirs.

Kinds: each registered name (:func:`registered_kinds`) has a coder class and a
config class with its own settings (:class:`TopKConfig`, :class:`ReLUConfig`,
...); a new kind is a :class:`SparseCoder` subclass decorated with
:func:`register_kind` (see ``docs/sae.md``).

Joint dictionaries over several models (crosscoders, universal SAEs, partitioned
crosscoders): :func:`fit_joint` (see :mod:`universality.sae.joint`).

Long path: :class:`TrainerConfig` with several :class:`CoderConfig` trained from
the same batches by :class:`Trainer`. Evaluation: :func:`evaluate` (FVU, L0,
dead/dense fractions) and :func:`evaluate_lm_loss` (loss with the dictionary spliced in); on a host,
:func:`evaluate_host` (``sae.evaluate(coder, host, tokens=...)``) runs SAEBench's core metrics and sparse
probing and writes SAEBench's JSON (``docs/evaluation.md``).
"""

from . import kinds as _kinds  # noqa: F401  (registers the built-in kinds)
from . import gated as _gated  # noqa: F401  (registers the gated kind)
from . import registry
from .coder import SparseCoder, StepOut, build_coder
from .config import BatchTopKConfig, CoderConfig, JumpReLUConfig, ReLUConfig, TopKConfig, TrainerConfig
from .evaluation import CoreMetrics, Evaluation, evaluate_host
from .export import to_saelens, to_sparsify
from .formats import detect_format, load, save
from .gated import GatedCoder, GatedConfig
from .loaders import LAYOUTS, Provenance, load_set
from .kinds import BatchTopKCoder, JumpReLUCoder, ReLUCoder, TopKCoder
from .metrics import LMLoss, Metrics, evaluate, evaluate_lm_loss
from .source import BatchStream
from .registry import coder_class, config_class, register_kind, registered_kinds, unregister_kind
from .trainer import Trainer, TrainResult, fit, geometric_median
from .joint import JointDictionary, fit_joint, load_joint

__all__ = [
    "SparseCoder", "StepOut", "TopKCoder", "BatchTopKCoder", "ReLUCoder", "JumpReLUCoder",
    "CoderConfig", "TopKConfig", "BatchTopKConfig", "ReLUConfig", "JumpReLUConfig", "TrainerConfig", "Trainer", "TrainResult", "BatchStream",
    "fit", "load", "save", "detect_format", "evaluate", "evaluate_lm_loss", "Metrics", "LMLoss",
    "build_coder", "coder_class", "config_class", "register_kind", "registered_kinds", "unregister_kind", "registry",
    "geometric_median", "GatedCoder", "GatedConfig", "to_saelens", "to_sparsify", "load_set", "LAYOUTS", "Provenance",
    "evaluate_host", "Evaluation", "CoreMetrics",
    "fit_joint", "load_joint", "JointDictionary",
]
