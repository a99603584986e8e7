"""WKV as two prefix sums: the vectorised path for channels whose weights span a bounded range.

With ``z_i = k_i + i w`` the state before position ``t`` is ``a_{t-1} = e^{-(t-1) w} sum_{i<t} e^{z_i} v_i``
(and ``b_{t-1}`` the same without ``v``), and the bonus term is ``e^{-(t-1) w} e^{u + z_t - w} v_t``. The common
factor ``e^{-(t-1) w}`` cancels in ``wkv_t = (a_{t-1} + e^{u+k_t} v_t) / (b_{t-1} + e^{u+k_t})``, so::

    wkv_t = (cumsum_{i<t} e^{z_i - M} v_i + e^{zb_t - M} v_t) / (cumsum_{i<t} e^{z_i - M} + e^{zb_t - M})

with ``zb_t = u + z_t - w`` and ``M`` the row's largest exponent: a handful of whole-tensor operations and two
cumulative sums instead of a loop over time, differentiated by autograd. Every exponent is at most 0; the
denominator is at least ``e^{zb_t - M}``, so where ``M - min_t zb_t <= SPREAD_LIMIT`` nothing underflows
(:func:`cumulative_channels`). Fast decays over long rows exceed it (``(t - 1) w`` grows with the row); a call
with any such channel takes the log-scaled scan of :mod:`.function` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SPREAD_LIMIT = 60.0
"""Largest ``M - min_t zb_t`` (nats) a channel may span on the cumulative path: ``e^-60`` is far above float32's
smallest normal number (``e^-87``), so every denominator stays a normal float."""


def _exponents(k: torch.Tensor, time_decay: torch.Tensor, time_first: torch.Tensor):
    """``z``, ``zb`` [b, t, C] in ``k``'s dtype and each row's largest exponent ``M`` [b, 1, C] (detached)."""
    w = torch.exp(time_decay)
    pos = torch.arange(k.shape[1], dtype=k.dtype, device=k.device)
    z = k + pos[:, None] * w
    zb = time_first + z - w
    return z, zb, torch.maximum(z.amax(1, keepdim=True), zb.amax(1, keepdim=True)).detach()


@torch.no_grad()
def _fits(zb: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Boolean mask [C]: channels whose exponents span at most :data:`SPREAD_LIMIT` in every row."""
    top = top.squeeze(1)
    return (top - zb.amin(1) <= SPREAD_LIMIT).all(0) & torch.isfinite(top).all(0)


def _prefix_sums(v: torch.Tensor, z: torch.Tensor, zb: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    stored = torch.exp(z - top)
    bonus = torch.exp(zb - top)
    num = F.pad(torch.cumsum(stored * v, 1), (0, 0, 1, -1))  # sums over i < t
    den = F.pad(torch.cumsum(stored, 1), (0, 0, 1, -1))
    return (num + bonus * v) / (den + bonus)


@torch.no_grad()
def cumulative_channels(k: torch.Tensor, time_decay: torch.Tensor, time_first: torch.Tensor) -> torch.Tensor:
    """Boolean mask [C]: channels whose exponents span at most :data:`SPREAD_LIMIT` in every row of ``k`` [b, t, C]."""
    _, zb, top = _exponents(k.float(), time_decay.float(), time_first.float())
    return _fits(zb, top)


def cumulative_wkv(k: torch.Tensor, v: torch.Tensor, time_decay: torch.Tensor, time_first: torch.Tensor) -> torch.Tensor:
    """RWKV-4 ``wkv`` [b, t, C] from keys and values [b, t, C] by prefix sums (module docstring), differentiable
    in all four inputs. Exact where :func:`cumulative_channels` holds for every channel; callers check that."""
    return _prefix_sums(v, *_exponents(k, time_decay, time_first))


def cumulative_wkv_if_exact(k: torch.Tensor, v: torch.Tensor, time_decay: torch.Tensor,
                            time_first: torch.Tensor) -> torch.Tensor | None:
    """:func:`cumulative_wkv` [b, t, C] when every channel passes the guard, else ``None``: the exponents the guard
    reads are the ones the prefix sums use, computed once (in ``k``'s dtype)."""
    z, zb, top = _exponents(k, time_decay, time_first)
    return _prefix_sums(v, z, zb, top) if bool(_fits(zb, top).all()) else None
