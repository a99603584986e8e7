"""The four dictionary kinds: TopK (+AuxK), BatchTopK, ReLU with norm-weighted L1, JumpReLU.

Each registers itself once with :func:`~universality.sae.registry.register_kind`, naming its config class. Losses are in normalised
units: the reconstruction term is the per-token squared error divided by
``d_out`` (about the fraction of variance unexplained, since targets are scaled
to mean squared norm ``d_out``).
"""

from __future__ import annotations

import torch
from torch import nn

from .coder import SparseCoder, StepOut
from .config import BatchTopKConfig, JumpReLUConfig, ReLUConfig, TopKConfig
from .registry import register_kind
from .sparse_ops import Pairs, SelectedPreacts, bf16_ranking_pays, preact_topk, sparse_decode, topk_pairs


def _recon_loss(recon: torch.Tensor, yn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss = mean per-token squared error / d_out, detached summed squared error)."""
    sq = (recon - yn).pow(2).sum()
    return sq / (yn.shape[0] * yn.shape[1]), sq.detach()


class _SparseSelectCoder(SparseCoder):
    """Shared training path of kinds that select a few latents per token (TopK, BatchTopK)."""

    encoder_init_scale = 0.5

    def select(self, pre: torch.Tensor) -> tuple[Pairs, torch.Tensor]:
        """Chosen ``(pairs, values [m])`` from pre-activations [b, n]; pair rows ascending."""
        raise NotImplementedError

    def select_from_input(self, xc: torch.Tensor) -> tuple[Pairs, torch.Tensor]:
        """Chosen ``(pairs, values [m])`` for encoder inputs ``xc`` [b, d_in] (values are exact float32 pre-activations)."""
        return self.select(torch.addmm(self.b_enc, xc, self.W_enc.t()))

    def _auxk(self, dead: torch.Tensor | None, xc: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        """AuxK loss: how well the top ``aux_k`` dead latents reconstruct the residual ``resid`` [b, d_out]."""
        cfg = self.cfg
        if dead is None or cfg.aux_coefficient == 0:
            return xc.new_zeros(())
        dead_ids = dead.nonzero().squeeze(1)
        n_dead = int(dead_ids.numel())
        if n_dead == 0:
            return xc.new_zeros(())
        ka = min(cfg.aux_k, n_dead)
        with torch.no_grad():  # pre-activations of the dead latents only
            sub = torch.addmm(self.b_enc[dead_ids], xc, self.W_enc[dead_ids].t())
            sub_pairs, vals = topk_pairs(sub, ka)
        pairs = Pairs(sub_pairs.rows, dead_ids[sub_pairs.cols], xc.shape[0], cfg.n_latents, ka)
        acts = SelectedPreacts.apply(xc, self.W_enc, self.b_enc, pairs, vals).relu()
        e_hat = sparse_decode(pairs, acts, self.W_dec)
        # the residual's total variance over the *global* batch: under torchrun each process holds a
        # share, and scaling by the world size makes the averaged gradients equal the 1-process ones
        stats = torch.cat([resid.sum(0), resid.pow(2).sum().reshape(1), resid.new_tensor([resid.shape[0]])]).double()
        world = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                torch.distributed.all_reduce(stats)
        n_rows = stats[-1]
        total = float((stats[-2] - stats[:-2].pow(2).sum() / n_rows).clamp_min(1e-12))
        return (e_hat - resid).pow(2).sum() / total * world * min(n_dead / cfg.aux_k, 1.0)

    def training_step(self, xn, yn, dead, sparsity_scale):  # noqa: D102
        b = xn.shape[0]
        xc = self.encoder_input(xn)
        with torch.no_grad():
            pairs, vals = self.select_from_input(xc)
        acts = SelectedPreacts.apply(xc, self.W_enc, self.b_enc, pairs, vals).relu()
        recon = sparse_decode(pairs, acts, self.W_dec) + self.b_dec + self.skip_term(xn)
        loss, sq = _recon_loss(recon, yn)
        aux = self._auxk(dead, xc, (yn - recon).detach())
        if self.cfg.aux_coefficient:
            loss = loss + self.cfg.aux_coefficient * aux
        with torch.no_grad():
            on = acts > 0
            fired = pairs.cols[on]  # may repeat ids: used only to index-assign
            l0 = float(on.sum()) / b
        return StepOut(loss, recon.detach(), sq, l0, float(aux.detach()) if torch.is_tensor(aux) else float(aux), fired)


@register_kind
class TopKCoder(_SparseSelectCoder):
    """TopK dictionary (Gao et al. 2024): keep the ``k`` largest ReLU pre-activations per token; AuxK revives dead latents."""

    kind = "topk"
    config_class = TopKConfig

    def select(self, pre):  # noqa: D102
        return topk_pairs(pre, self.cfg.k)

    def select_from_input(self, xc):  # noqa: D102
        if bf16_ranking_pays(xc, self.cfg.n_latents, self.cfg.k):
            # a margin of 1.5k leaves ~0.1% of rows to the float32 fallback (k=32, 8K latents)
            return preact_topk(xc, self.W_enc, self.b_enc, self.cfg.k, margin=3 * self.cfg.k // 2)
        return super().select_from_input(xc)

    def activate(self, pre):  # noqa: D102
        vals, idx = pre.topk(self.cfg.k, dim=1, sorted=False)
        return torch.zeros_like(pre).scatter_(1, idx, vals.relu())


@register_kind
class BatchTopKCoder(_SparseSelectCoder):
    """BatchTopK (Bussmann et al. 2024): keep the ``k * batch`` largest activations of the whole batch.

    At inference a latent fires when its pre-activation exceeds ``threshold``,
    a running mean of the smallest activation kept in training batches.
    The batch selection is taken among each token's top ``4k`` candidates (exact
    unless one token holds more than ``4k`` of the batch's winners).
    """

    kind = "batchtopk"
    config_class = BatchTopKConfig
    candidate_factor = 4

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_steps", torch.zeros((), dtype=torch.long))

    def select(self, pre):  # noqa: D102
        b, n = pre.shape
        kc = min(n, self.candidate_factor * self.cfg.k)
        cand_vals, cand_idx = pre.topk(kc, dim=1, sorted=False)
        flat_vals, flat_pos = cand_vals.reshape(-1).topk(self.cfg.k * b, sorted=False)
        flat_pos, order = flat_pos.sort()
        vals = flat_vals[order]
        pairs = Pairs(flat_pos // kc, cand_idx.reshape(-1)[flat_pos], b, n)
        if self.training:
            pos = vals[vals > 0]
            if pos.numel():
                # running mean over the first 100 steps, then an exponential average
                rate = max(1.0 / (int(self.threshold_steps) + 1), 0.01)
                self.threshold.mul_(1 - rate).add_(rate * pos.min())
                self.threshold_steps.add_(1)
        return pairs, vals

    def activate(self, pre):  # noqa: D102
        return pre * (pre > self.threshold.clamp_min(0))


@register_kind
class ReLUCoder(SparseCoder):
    """ReLU dictionary with an L1 penalty on activations weighted by decoder-row norms (Anthropic, 2024).

    loss = ||y - ŷ||² / d_out + l1_coefficient * sum_i f_i ||W_dec[i]|| / sqrt(d_out)
    """

    kind = "relu"
    config_class = ReLUConfig

    def activate(self, pre):  # noqa: D102
        return pre.relu()

    def training_step(self, xn, yn, dead, sparsity_scale):  # noqa: D102
        f = self.preacts(xn).relu()
        recon = f @ self.W_dec + self.b_dec + self.skip_term(xn)
        loss, sq = _recon_loss(recon, yn)
        l1 = (f * self.W_dec.norm(dim=1)).sum(1).mean() / yn.shape[1] ** 0.5
        loss = loss + sparsity_scale * self.cfg.l1_coefficient * l1
        return _dense_step_out(loss, recon, sq, f)


def _dense_step_out(loss, recon, sq, f) -> StepOut:
    """StepOut of a dense-code kind: L0 and the latents that fired, from codes ``f`` [batch, n_latents]."""
    with torch.no_grad():
        on = f > 0
        fired = on.any(0).nonzero().squeeze(1)
        l0 = float(on.sum()) / f.shape[0]
    return StepOut(loss, recon.detach(), sq, l0, 0.0, fired)


class _JumpReLU(torch.autograd.Function):
    """``pre * (pre > theta)`` with the straight-through threshold gradient of Rajamanoharan et al. (2024)."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):  # noqa: D102
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        gate = pre > theta
        near = ((pre - theta).abs() < eps / 2).to(g.dtype)
        g_theta = -(theta / eps) * near * g
        return g * gate, g_theta.sum(0), None


class _Step(torch.autograd.Function):
    """Heaviside ``pre > theta`` with a straight-through gradient for ``theta`` only."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):  # noqa: D102
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        near = ((pre - theta).abs() < eps / 2).to(g.dtype)
        return None, (-(1.0 / eps) * near * g).sum(0), None


@register_kind
class JumpReLUCoder(SparseCoder):
    """JumpReLU dictionary: a latent fires when its pre-activation exceeds its own learned threshold.

    loss = ||y - ŷ||² / d_out + l0_coefficient * L0, where the thresholds learn
    through straight-through estimators (rectangle kernel of width ``jump_bandwidth``).
    """

    kind = "jumprelu"
    config_class = JumpReLUConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.n_latents,), float(cfg.jump_init_threshold)).log())

    @property
    def threshold(self) -> torch.Tensor:
        """Per-latent thresholds [n_latents]."""
        return self.log_threshold.exp()

    def activate(self, pre):  # noqa: D102
        return pre * (pre > self.threshold)

    def training_step(self, xn, yn, dead, sparsity_scale):  # noqa: D102
        pre = self.preacts(xn)
        theta = self.threshold
        f = _JumpReLU.apply(pre, theta, self.cfg.jump_bandwidth)
        recon = f @ self.W_dec + self.b_dec + self.skip_term(xn)
        loss, sq = _recon_loss(recon, yn)
        l0_ste = _Step.apply(pre, theta, self.cfg.jump_bandwidth).sum(1).mean()
        loss = loss + sparsity_scale * self.cfg.l0_coefficient * l0_ste
        return _dense_step_out(loss, recon, sq, f)


__all__ = ["TopKCoder", "BatchTopKCoder", "ReLUCoder", "JumpReLUCoder"]
