"""The joint dictionary kinds: crosscoder (BatchTopK), crosscoder with L1, universal SAE, partitioned crosscoder.

Each is a :class:`~universality.sae.SparseCoder` over the concatenated, scaled
activations ``[b, sum(widths)]`` (see :mod:`.config`), registered once with
``joint = True``; the trainer (:class:`~universality.sae.Trainer`) trains it
like any dictionary, so progress, checkpoints, kill -9 resume and torchrun
data parallelism are the trainer's own. ``W_dec[:, blocks[m]]`` is model m's
decoder ``[n_latents, d_m]``; ``W_enc[:, blocks[m]]`` the encoder's columns reading model m.
"""

from __future__ import annotations

import random

import torch

from ..coder import StepOut
from ..kinds import BatchTopKCoder, ReLUCoder, TopKCoder, _dense_step_out, _recon_loss
from ..registry import register_kind
from ..sparse_ops import SelectedPreacts, sparse_decode, topk_pairs
from .config import CrosscoderConfig, CrosscoderL1Config, PartitionedConfig, USAEConfig


def block_norms(W_dec: torch.Tensor, blocks: list[slice]) -> torch.Tensor:
    """Per-model decoder norms ``[M, n_latents]`` of a concatenated decoder ``W_dec`` ``[n_latents, sum d_m]``."""
    return torch.stack([W_dec[:, sl].norm(dim=1) for sl in blocks])


@register_kind
class CrosscoderCoder(BatchTopKCoder):
    """Crosscoder with BatchTopK sparsity: the BatchTopK autoencoder of the concatenated space.

    The encoder reads every model; decoder rows have unit norm over the concatenation,
    so a latent's per-model norms ``||d_m||`` are free and say which models it writes to.
    The loss is the summed squared error over all models (each scaled to equal energy).
    """

    kind = "crosscoder"
    config_class = CrosscoderConfig
    joint = True


@register_kind
class CrosscoderL1Coder(ReLUCoder):
    """Crosscoder with a ReLU code and the L1 penalty ``sum_i f_i * sum_m ||d_m,i||`` (Lindsey et al. 2024).

    loss = ||y - ŷ||² / d_in + l1_coefficient * sum_i f_i sum_m ||d_m,i|| / sqrt(d_in / M).
    Summing per-model norms makes one shared latent cost as much as two exclusive
    ones, which is the source of the artefacts of Minder et al. (2025).
    """

    kind = "crosscoder_l1"
    config_class = CrosscoderL1Config
    joint = True

    def training_step(self, xn, yn, dead, sparsity_scale):  # noqa: D102
        f = self.preacts(xn).relu()
        recon = f @ self.W_dec + self.b_dec
        loss, sq = _recon_loss(recon, yn)
        norms = block_norms(self.W_dec, self.cfg.blocks()).sum(0)
        l1 = (f * norms).sum(1).mean() / (yn.shape[1] / self.cfg.n_models) ** 0.5
        loss = loss + sparsity_scale * self.cfg.l1_coefficient * l1
        return _dense_step_out(loss, recon, sq, f)


@register_kind
class USAECoder(BatchTopKCoder):
    """Universal SAE: one encoder per model (the column blocks of ``W_enc``), a shared sparse code, one decoder per model.

    Sparsity is BatchTopK (default) or TopK (``sparsity="topk"``).

    A training step draws one source model (seeded by ``seed`` and the step count,
    identical on every process and after a resume), encodes its rows only and
    decodes into every model. At inference :meth:`preacts` of the concatenation is
    the mean of the models' encoders (a consensus code); :meth:`preacts_from` encodes from one model.
    """

    kind = "usae"
    config_class = USAEConfig
    joint = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # BatchTopK's inference threshold per source model: each model's encoder has its own scale of pre-activations
        self.register_buffer("source_threshold", torch.zeros(cfg.n_models))
        self.register_buffer("source_threshold_steps", torch.zeros(cfg.n_models, dtype=torch.long))

    def select(self, pre):  # noqa: D102
        if self.cfg.sparsity == "topk":
            return topk_pairs(pre, self.cfg.k)
        return super().select(pre)

    def _track_source_threshold(self, m: int, vals: torch.Tensor) -> None:
        """The running threshold of source ``m`` (the rule of the shared ``threshold``, on the steps that encode model m)."""
        pos = vals[vals > 0]
        if self.training and self.cfg.sparsity == "batchtopk" and pos.numel():
            rate = max(1.0 / (int(self.source_threshold_steps[m]) + 1), 0.01)
            self.source_threshold[m] = self.source_threshold[m] * (1 - rate) + rate * pos.min()
            self.source_threshold_steps[m] += 1

    def activate_from(self, pre: torch.Tensor, m: int) -> torch.Tensor:
        """Codes [b, n_latents] of pre-activations read from model ``m`` alone (BatchTopK: model m's own threshold)."""
        if self.cfg.sparsity == "topk" or int(self.source_threshold_steps[m]) == 0:
            return self.activate(pre)
        return pre * (pre > self.source_threshold[m].clamp_min(0))

    def activate(self, pre):  # noqa: D102
        if self.cfg.sparsity == "topk":
            return TopKCoder.activate(self, pre)
        return super().activate(pre)

    def source_model(self, step: int) -> int:
        """The model whose rows are encoded at training step ``step`` (a seeded draw)."""
        return random.Random(int(self.cfg.seed) * 1_000_003 + step).randrange(self.cfg.n_models)

    def preacts(self, xn):  # noqa: D102
        return torch.addmm(self.b_enc, self.encoder_input(xn), self.W_enc.t(), alpha=1.0 / self.cfg.n_models)

    def preacts_from(self, xn_m: torch.Tensor, m: int) -> torch.Tensor:
        """Pre-activations [b, n_latents] from model ``m``'s normalised rows ``xn_m`` [b, d_m] alone."""
        sl = self.cfg.blocks()[m]
        return torch.addmm(self.b_enc, xn_m - self.b_dec[sl], self.W_enc[:, sl].t())

    def training_step(self, xn, yn, dead, sparsity_scale):  # noqa: D102
        b = xn.shape[0]
        m = self.source_model(int(self.steps))
        if self.training:
            self.steps.add_(1)
        sl = self.cfg.blocks()[m]
        xc = xn[:, sl] - self.b_dec[sl]
        W = self.W_enc[:, sl].contiguous()
        with torch.no_grad():
            pairs, vals = self.select(torch.addmm(self.b_enc, xc, W.t()))
            self._track_source_threshold(m, vals)
        acts = SelectedPreacts.apply(xc, W, self.b_enc, pairs, vals).relu()
        recon = sparse_decode(pairs, acts, self.W_dec) + self.b_dec
        loss, sq = _recon_loss(recon, yn)
        full = torch.zeros_like(xn)
        full[:, sl] = xc.detach()  # the dead latents' AuxK reads the same single model
        aux = self._auxk(dead, full, (yn - recon).detach())
        if self.cfg.aux_coefficient:
            loss = loss + self.cfg.aux_coefficient * aux
        with torch.no_grad():
            on = acts > 0
            fired = pairs.cols[on]
            l0 = float(on.sum()) / b
        return StepOut(loss, recon.detach(), sq, l0, float(aux.detach()), fired)


@register_kind
class PartitionedCoder(CrosscoderCoder):
    """Partitioned (dedicated-feature) crosscoder: a shared block of latents and a block dedicated to each model.

    A dedicated latent of model m has its encoder and decoder columns of every other
    model held at zero (zeroed at initialisation, their gradients removed before
    each step and the weights zeroed again after it).
    """

    kind = "partitioned"
    config_class = PartitionedConfig
    joint = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self._apply_partition(weights=True)

    def _masked(self):
        """``(latent slice, column slice)`` of every block held at zero."""
        cols = self.cfg.blocks()
        for m, rows in enumerate(self.cfg.exclusive_rows()):
            for j, sl in enumerate(cols):
                if j != m and rows.stop > rows.start:
                    yield rows, sl

    def _apply_partition(self, weights: bool) -> None:
        with torch.no_grad():
            for rows, sl in self._masked():
                for p in (self.W_enc, self.W_dec):
                    t = p if weights else p.grad
                    if t is not None:
                        t[rows, sl] = 0
            if weights and self.cfg.unit_norm_decoder:
                self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def before_step(self) -> None:  # noqa: D102
        super().before_step()
        self._apply_partition(weights=False)

    def after_step(self) -> None:  # noqa: D102
        super().after_step()
        self._apply_partition(weights=True)


__all__ = ["CrosscoderCoder", "CrosscoderL1Coder", "USAECoder", "PartitionedCoder", "block_norms"]
