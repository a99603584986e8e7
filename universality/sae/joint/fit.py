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
from typing import Any, Iterator, Sequence

import torch

from ..._errors import UniversalityError
from ..config import CoderConfig, TrainerConfig
from ..registry import kind_settings, lookup, registered_kinds
from ..trainer import Trainer
from .dictionary import JointDictionary


class AlignedRows:
    """M activation sources read at the same aligned rows: tensors ``[n, d_m]`` or stores (``.gather``, ``.n_rows``).

    ``rows[m]`` (optional) are the row indices of model m's source that line up
    (the alignment maps of two tokenizers, or the masked rows of one stream);
    without them every row of every source is used, in order.
    """

    def __init__(self, xs: Sequence[Any], rows: Sequence[Any] | None = None, hooks: Sequence[str | None] | None = None):
        if not isinstance(xs, (list, tuple)):
            raise UniversalityError(f"xs is a {type(xs).__name__}; give a list of aligned [n, d_m] tensors or activation stores, one per model")
        if len(xs) < 2:
            raise UniversalityError(f"xs has {len(xs)} model(s); a joint dictionary needs at least 2 models' aligned activations")
        m = len(xs)
        if rows is not None and (not isinstance(rows, (list, tuple)) or len(rows) != m):
            raise UniversalityError(f"rows must be a list of {m} row-index tensors, one per model (or None for every row)")
        if hooks is not None and (not isinstance(hooks, (list, tuple)) or len(hooks) != m):
            raise UniversalityError(f"hooks must be a list of {m} hook names, one per model (or None)")
        self.sources, self.rows, self.hooks, self.widths = list(xs), [], list(hooks) if hooks is not None else [None] * m, []
        n_ref = None
        for i, x in enumerate(xs):
            if isinstance(x, torch.Tensor):
                if x.dim() != 2:
                    raise UniversalityError(f"xs[{i}] has shape {tuple(x.shape)}; give a 2-D tensor [n, d_m]")
                n_src, width = x.shape[0], x.shape[1]
            elif hasattr(x, "gather") and hasattr(x, "n_rows"):
                n_src, width = int(x.n_rows), int(x.d(self.hooks[i]))
            else:
                raise UniversalityError(f"xs[{i}] is a {type(x).__name__}; give a tensor [n, d_m] or an activation store")
            r = None if rows is None or rows[i] is None else torch.as_tensor(rows[i], dtype=torch.long).reshape(-1)
            if r is not None and r.numel() and (int(r.min()) < 0 or int(r.max()) >= n_src):
                raise UniversalityError(f"rows[{i}] holds indices outside 0..{n_src - 1}, the rows of xs[{i}]")
            n = n_src if r is None else int(r.numel())
            if n == 0:
                raise UniversalityError(f"xs[{i}] has no aligned rows; give each model at least one row aligned with the others")
            if n_ref is not None and n != n_ref:
                raise UniversalityError(
                    f"xs[{i}] has {n} aligned rows but xs[0] has {n_ref}; every model needs the same aligned rows (pass rows= from the alignment)"
                )
            n_ref = n
            self.rows.append(r)
            self.widths.append(int(width))
        self.n = int(n_ref)

    def read(self, m: int, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (aligned positions) of model ``m`` → float32 ``[len(idx), d_m]``; NaN is an error naming the model."""
        r = idx if self.rows[m] is None else self.rows[m][idx]
        x = self.sources[m]
        out = x[r].float() if isinstance(x, torch.Tensor) else x.gather(r, self.hooks[m])
        if not bool(torch.isfinite(out).all()):
            raise UniversalityError(f"xs[{m}] contains NaN or infinite values; clean the activations of model {m} first")
        return out

    def concat(self, idx: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
        """Scaled concatenated rows ``[len(idx), sum d_m]`` at aligned positions ``idx``."""
        return torch.cat([self.read(m, idx) * s for m, s in enumerate(scales)], dim=1)

    def batches(self, batch_size: int, scales: Sequence[float], seed: int, n_rows: int) -> Iterator[torch.Tensor]:
        """Shuffled scaled concatenated batches over the first ``n_rows`` aligned rows, one epoch after another (seeded)."""
        epoch = 0
        while True:
            perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            for i in range(0, max(n_rows - batch_size + 1, 1), batch_size):
                idx = perm[i:i + batch_size].sort().values
                yield self.concat(idx, scales)
            epoch += 1


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
    ``checkpoint_dir`` makes the run resumable after a kill.
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
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
    trainer = Trainer(tcfg)
    bs = tcfg.batch_size
    result = trainer.fit(lambda: src.batches(bs, scales, data_seed, n_train))
    coder = result.coders[0]
    jd = JointDictionary(coder.eval())
    if n_eval:
        from .diagnostics import frequency_and_fvu

        held = torch.arange(n_train, src.n)
        freq, fvu = frequency_and_fvu(jd, src, held)
        jd.frequency = freq
        jd.metrics = {"fvu": fvu, "n_eval": n_eval, "n_steps": result.n_steps}
    return jd


__all__ = ["fit_joint", "AlignedRows", "model_scales"]
