"""Training a joint dictionary: check the aligned inputs, scale each model, hand the concatenation to the trainer.

Phases of :func:`fit_joint`:

1. check the inputs (at least two models, the same aligned rows in each, finite values);
2. scale each model so that its mean squared norm is ``sum(widths) / M`` (equal energy per model);
3. train the kind's coder on the concatenated rows with :class:`~universality.sae.Trainer`
   (progress bar, checkpoints and kill -9 resume, torchrun data parallelism);
4. measure every latent's firing frequency on held-out rows and wrap the coder in a
   :class:`~universality.sae.joint.JointDictionary`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..._errors import UniversalityError
from ..config import CoderConfig, TrainerConfig
from ..registry import kind_settings, lookup, registered_kinds
from ..trainer import Trainer
from .dictionary import JointDictionary
from .rows import AlignedRows


def model_scales(src: AlignedRows, n_sample: int = 16384) -> list[float]:
    """Per-model multipliers giving every model mean squared norm ``sum(widths) / M`` on the first ``n_sample`` rows."""
    idx = torch.arange(min(src.n, n_sample))
    target = sum(src.widths) / len(src.widths)
    out = []
    for m in range(len(src.widths)):
        ms = float(src.read(m, idx).double().pow(2).sum(1).mean())
        if not ms > 0:
            raise UniversalityError(f"xs[{m}] is all zeros on its first rows; a model without signal cannot be scaled")
        out.append(math.sqrt(target / ms))
    return out


def fit_joint(
    xs: Sequence[Any],
    kind: str = "crosscoder",
    n_latents: int = 4096,
    k: int = 32,
    seed: int = 0,
    *,
    names: Sequence[str] | None = None,
    rows: Sequence[Any] | None = None,
    hooks: Sequence[str | None] | None = None,
    batch_size: int = 4096,
    n_tokens: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    data_seed: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 200,
    dead_window_tokens: int | None = None,
    **options: Any,
) -> JointDictionary:
    """Train one joint dictionary over M models' aligned activations and return it.

    ``xs``: a list of aligned ``[n, d_m]`` tensors or activation stores (``rows[m]``
    selects model m's aligned rows, ``hooks[m]`` a store's hook). ``kind``: a joint kind
    (``"crosscoder"``, ``"crosscoder_l1"``, ``"usae"``, ``"partitioned"``); ``k`` goes
    to the kinds that have it. Other settings of the kind's config
    (``l1_coefficient``, ``exclusive``, ``aux_k``, ...) pass through ``options``.
    A tenth of the rows (at most 32768) is held out to measure the final metrics and each latent's
    firing frequency. ``n_tokens`` defaults to ``max(n, 300 * batch_size)``.
    ``checkpoint_dir`` makes the run resumable after a kill. ``dead_window_tokens``: a latent that has not fired in
    this many training tokens counts as dead and gets the AuxK loss (kinds with ``aux_k``); ``None`` means two
    passes over the training rows, at most the trainer's default, so AuxK also works on small in-memory sets.
    """
    if kind not in registered_kinds(joint=True):
        known = ", ".join(registered_kinds(joint=True))
        lookup(kind)  # unknown names: the registry's sentence
        raise UniversalityError(f"kind {kind!r} is a single-model dictionary; a joint dictionary is one of {known} (use sae.fit for {kind!r})")
    src = AlignedRows(xs, rows, hooks)
    if names is not None and len(names) != len(src.widths):
        raise UniversalityError(f"names has {len(names)} entries; give one name per model ({len(src.widths)})")
    own = {"k": k} if "k" in kind_settings(kind) else {}
    cfg = CoderConfig(kind=kind, widths=src.widths, model_names=list(names) if names is not None else [], n_latents=n_latents,
                      seed=seed, **own, **options)
    scales = model_scales(src)
    cfg.model_scales = scales
    n_eval = min(max(src.n // 10, 1), 32768) if src.n >= 20 else 0
    n_train = src.n - n_eval
    data_seed = seed if data_seed is None else data_seed
    tcfg = TrainerConfig(coders=[cfg], batch_size=min(batch_size, n_train), n_tokens=n_tokens or max(n_train, 300 * min(batch_size, n_train)),
                         lr=lr, seed=data_seed, device=device, normalize=False, b_dec_init="mean",
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         dead_window_tokens=dead_window_tokens or min(TrainerConfig.dead_window_tokens, 2 * n_train))
    trainer = Trainer(tcfg)
    bs = tcfg.batch_size
    result = trainer.fit(lambda: src.batches(bs, scales, data_seed, n_train))
    coder = result.coders[0]
    jd = JointDictionary(coder.eval())
    if n_eval:
        from .diagnostics import firing_stats

        held = torch.arange(n_train, src.n)
        freq, fvu, by_source = firing_stats(jd, src, held)
        jd.frequency, jd.source_frequency = freq, by_source
        jd.metrics = {"fvu": fvu, "n_eval": n_eval, "n_steps": result.n_steps}
    return jd


__all__ = ["fit_joint", "AlignedRows", "model_scales"]
