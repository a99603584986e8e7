"""Mamba-1's mixer between ``in_proj`` and ``out_proj`` as one autograd Function on the C kernels (CPU).

From ``xz = in_proj(u)`` ``[b, t, 2d]`` (x half, then the gate z) it computes::

    xc          = silu(causal_depthwise_conv(x))            (ssm.conv_out)
    dt_low, B, C = split(xc @ W_x.T, [rank, n, n])          (x_proj)
    raw         = dt_low @ W_dt.T                            (dt_proj without its bias)
    out         = selective_scan(xc, softplus(raw + dt_bias), A, B, C, D) * silu(z)

and returns ``out`` ``[b, t, d]``, the input of ``out_proj``. One Function instead of
five autograd nodes lets its backward write the gradients of both halves of ``xz``
straight into one ``[b, t, 2d]`` buffer (so ``in_proj``'s backward is one plain
product for the input and one for the weight), add ``x_proj``'s input gradient onto
the scan's in place, and hand ``x_proj``'s output gradient over as one buffer: fewer
full-size ``[b, t, d]`` tensors are written and read, and fewer ops run.

The host uses it only when none of the points inside (``ssm.in_x``, ``ssm.gate``,
``ssm.conv_out``, ``ssm.dt``, ``ssm.B``, ``ssm.C``, ``ssm.state``, ``ssm.y``) is read
or written; otherwise it runs the same steps one by one so every point can be hooked.
"""

from __future__ import annotations

import torch

from ._ckernel import load_kernel
from .conv import conv_silu_backward, conv_silu_forward
from .scan import _c_backward, _c_forward

_BLOCK = 16


def mixer_core_fits(xz: torch.Tensor, d_inner: int, act_name: str, *weights: torch.Tensor | None) -> bool:
    """Whether :func:`mixer_core` can run: CPU float32/float64 tensors of one dtype, SiLU, ``d_inner``
    a multiple of 16, and a working C kernel."""
    return (act_name in ("silu", "swish") and xz.device.type == "cpu" and xz.dtype in (torch.float32, torch.float64)
            and d_inner % _BLOCK == 0 and all(w is None or w.dtype == xz.dtype for w in weights)
            and load_kernel() is not None)


class _MixerCoreC(torch.autograd.Function):
    """C forward and backward of :func:`mixer_core` (conv + SiLU, x_proj, dt_proj, gated scan)."""

    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, rank):
        d = xz.shape[-1] // 2
        n = A.shape[1]
        b, t = xz.shape[:2]
        x, z = xz[..., :d], xz[..., d:]
        xc, conv_saved = conv_silu_forward(x, conv_w, conv_b)
        xdbl = torch.mm(xc.view(-1, d), x_proj_w.t())  # [b t, rank + 2n]
        dt_low = xdbl[:, :rank]
        raw = torch.mm(dt_low, dt_proj_w.t()).view(b, t, d)
        B = xdbl[:, rank:rank + n].view(b, t, n)
        C = xdbl[:, rank + n:].view(b, t, n)
        _, out, _ = _c_forward(load_kernel(), xc, raw, A, B, C, D, z=z, want_y=False, dt_bias=dt_bias,
                               dt_softplus=True)
        xr, xs, Wt, bc = conv_saved
        # raw is recomputed in the backward (one small product) rather than kept: 8 MiB less per block
        # held until then for the issue-2 config, so fewer fresh pages each step
        ctx.save_for_backward(xz, xc, xdbl, x_proj_w, dt_proj_w, dt_bias, A, D, xr, Wt, bc)
        ctx.rank, ctx.xs, ctx.conv_shape = rank, xs, conv_w.shape
        ctx.has = (conv_b is not None, dt_bias is not None, D is not None)
        return out

    @staticmethod
    def backward(ctx, dout):
        xz, xc, xdbl, x_proj_w, dt_proj_w, dt_bias, A, D, xr, Wt, bc = ctx.saved_tensors
        rank = ctx.rank
        b, t, d2 = xz.shape
        d, n = d2 // 2, A.shape[1]
        B = xdbl[:, rank:rank + n].view(b, t, n)
        C = xdbl[:, rank + n:].view(b, t, n)
        raw = torch.mm(xdbl[:, :rank], dt_proj_w.t()).view(b, t, d)
        dxz = xz.new_empty(b, t, d2)
        dxc, draw, dA, dB, dC, dD, _, ddtb = _c_backward(
            load_kernel(), xc, raw, A, B, C, D, xz[..., d:], dout.contiguous(), dt_bias, True, dz_out=dxz[..., d:])
        draw2 = draw.reshape(-1, d)
        dxdbl = torch.empty_like(xdbl)  # x_proj's output gradient, assembled in one buffer
        dxdbl[:, :rank] = torch.mm(draw2, dt_proj_w)
        dxdbl[:, rank:rank + n].copy_(dB.view(-1, n))
        dxdbl[:, rank + n:].copy_(dC.view(-1, n))
        d_dt_proj_w = torch.mm(draw2.t(), xdbl[:, :rank])
        dxc2 = dxc.view(-1, d)
        d_x_proj_w = torch.mm(dxdbl.t(), xc.view(-1, d))
        dxc2.addmm_(dxdbl, x_proj_w)  # x_proj's input gradient added onto the scan's, in place
        _, dWt, db = conv_silu_backward((xr, ctx.xs, Wt, bc), dxc, dx_out=dxz[..., :d])
        has_cb, has_dtb, has_D = ctx.has
        return (dxz, dWt.t().reshape(ctx.conv_shape), db if has_cb else None, d_x_proj_w, d_dt_proj_w,
                ddtb if has_dtb else None, dA, dD if has_D else None, None)


def mixer_core(xz: torch.Tensor, conv_w: torch.Tensor, conv_b: torch.Tensor | None, x_proj_w: torch.Tensor,
               dt_proj_w: torch.Tensor, dt_bias: torch.Tensor | None, A: torch.Tensor, D: torch.Tensor | None,
               rank: int) -> torch.Tensor:
    """Gated scan output ``[b, t, d]`` from ``in_proj``'s output ``xz`` ``[b, t, 2d]`` (see the module docstring).

    Args:
        conv_w: ``[d, 1, k]`` conv weight, ``conv_b`` ``[d]`` or None; ``x_proj_w`` ``[rank + 2n, d]``;
        ``dt_proj_w`` ``[d, rank]``, ``dt_bias`` ``[d]`` or None; ``A`` ``[d, n]`` (negative), ``D`` ``[d]`` or None.
    Gradients flow to every tensor argument. Check :func:`mixer_core_fits` first.
    """
    return _MixerCoreC.apply(xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, rank)
