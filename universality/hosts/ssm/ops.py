"""Small building blocks shared by the Mamba hosts: causal depthwise conv and RMS norms.

Every function reads the weights it is given at call time, so edits made in place
to the Hugging Face modules (e.g. ``mixer.conv1d.weight``) are followed.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from ._ckernel import kernel_threads, load_kernel
from .heap import hugepage_empty

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_BLOCK = 16


def _ptr(t: torch.Tensor):
    return ctypes.c_void_p(t.data_ptr())


class _RMSNormC(torch.autograd.Function):
    """C forward/backward of ``weight * x / sqrt(mean(x**2) + eps)`` over the last axis."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        lib = load_kernel()
        suffix = "f32" if x.dtype == torch.float32 else "f64"
        d = x.shape[-1]
        xc, wc = x.contiguous(), weight.contiguous()
        rows = xc.numel() // d
        y = torch.empty_like(xc)
        rstd = xc.new_empty(rows)
        getattr(lib, f"rms_fwd_{suffix}")(_ptr(xc), _ptr(wc), float(eps), _ptr(y), _ptr(rstd), rows, d, kernel_threads(xc.numel()))
        ctx.save_for_backward(xc, wc, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        lib = load_kernel()
        xc, wc, rstd = ctx.saved_tensors
        suffix = "f32" if xc.dtype == torch.float32 else "f64"
        d = xc.shape[-1]
        rows = xc.numel() // d
        nt = kernel_threads(xc.numel())
        dy = dy.contiguous()
        dx = torch.empty_like(xc)
        dw = xc.new_zeros(nt, d)
        getattr(lib, f"rms_bwd_{suffix}")(_ptr(xc), _ptr(wc), _ptr(rstd), _ptr(dy), _ptr(dx), _ptr(dw), rows, d, nt)
        return dx, dw.sum(0), None


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Causal depthwise 1-D convolution in the ``[b, t, d]`` layout.

    ``weight`` is the Hugging Face ``Conv1d`` weight ``[d, 1, k]`` (or ``[d, k]``);
    output position ``t`` sees inputs ``t-k+1 .. t`` (zeros before the start)::

        out[:, t, c] = bias[c] + sum_i weight[c, i] * x[:, t - (k - 1) + i, c]

    Returns ``[b, t, d]`` in ``x``'s dtype.
    """
    w = weight.reshape(weight.shape[0], -1).to(x.dtype)  # [d, k]
    k = w.shape[1]
    t = x.shape[1]
    padded = F.pad(x, (0, 0, k - 1, 0))  # zeros before position 0
    out = padded[:, k - 1 : k - 1 + t] * w[:, k - 1]
    for i in range(k - 1):
        out = out + padded[:, i : i + t] * w[:, i]
    if bias is not None:
        out = out + bias.to(x.dtype)
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, use_kernel: bool = True) -> torch.Tensor:
    """``weight * x / sqrt(mean(x**2, -1) + eps)`` over the last axis (float32 math for half inputs, as HF does).

    On CPU float32/float64 with a width that is a multiple of 16, a fused C kernel
    (one pass forward, one backward) is used unless ``use_kernel`` is false.
    """
    if (use_kernel and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and weight.dtype == x.dtype
            and x.shape[-1] % _BLOCK == 0 and load_kernel() is not None):
        return _RMSNormC.apply(x, weight, eps)
    work = x.float() if x.dtype in _LOW_PRECISION else x
    normed = work * torch.rsqrt(work.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def gated_rms_norm(y: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float, group_size: int) -> torch.Tensor:
    """Mamba-2's gated RMS norm: ``rms_norm(y * silu(gate))`` computed per group of ``group_size`` channels.

    ``y``, ``gate``: ``[b, t, d_inner]``; returns the same shape.
    """
    work = y.float() if y.dtype in _LOW_PRECISION else y
    work = work * F.silu(gate.to(work.dtype))
    *lead, d = work.shape
    grouped = work.view(*lead, d // group_size, group_size)
    grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + eps)
    return weight * grouped.view(*lead, d).to(y.dtype)


def upcast_residual(h: torch.Tensor, residual_in_fp32: bool) -> torch.Tensor:
    """The residual stream HF adds the mixer output to: float32 for half inputs when ``residual_in_fp32``."""
    return h.float() if residual_in_fp32 and h.dtype in _LOW_PRECISION else h


class _TwoHeadedLinear(torch.autograd.Function):
    """``u @ W.T (+ bias)`` returned as two column views ``[..., :k]`` and ``[..., k:]``.

    One product forward; the backward writes both halves of ``dW`` in place and adds the
    two input gradients with one ``addmm``, so no zero-filled scatter buffers are made.
    """

    @staticmethod
    def forward(ctx, u, weight, bias, k):
        u2 = u.reshape(-1, u.shape[-1])
        out = F.linear(u2, weight, bias).view(*u.shape[:-1], weight.shape[0])
        ctx.save_for_backward(u2, weight)
        ctx.k, ctx.has_bias, ctx.lead = k, bias is not None, u.shape[:-1]
        return out[..., :k], out[..., k:]

    @staticmethod
    def backward(ctx, g1, g2):
        u2, weight = ctx.saved_tensors
        k, rows = ctx.k, u2.shape[0]
        g1 = torch.zeros(rows, k, dtype=u2.dtype, device=u2.device) if g1 is None else g1.reshape(rows, k)
        g2 = (torch.zeros(rows, weight.shape[0] - k, dtype=u2.dtype, device=u2.device) if g2 is None
              else g2.reshape(rows, -1))
        du = torch.addmm(g1 @ weight[:k], g2, weight[k:]).view(*ctx.lead, u2.shape[1])
        dw = torch.empty_like(weight)
        torch.mm(g1.t(), u2, out=dw[:k])
        torch.mm(g2.t(), u2, out=dw[k:])
        db = torch.cat([g1.sum(0), g2.sum(0)]) if ctx.has_bias else None
        return du, dw, db, None


def two_headed_linear(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, k: int):
    """``F.linear(u, weight, bias)`` split after output column ``k``: ``([..., :k], [..., k:])`` as views of one product."""
    return _TwoHeadedLinear.apply(u, weight, bias, k)


class _LMHead(torch.autograd.Function):
    """``h @ W.T (+ bias)`` written into a buffer that :func:`hugepage_empty` allocated; linear's usual backward."""

    @staticmethod
    def forward(ctx, h, weight, bias):
        h2 = h.reshape(-1, h.shape[-1])
        out = hugepage_empty(h2.shape[0], weight.shape[0], dtype=h.dtype)
        torch.mm(h2, weight.t(), out=out)
        if bias is not None:
            out.add_(bias)
        ctx.save_for_backward(h2, weight)
        ctx.lead, ctx.has_bias = h.shape[:-1], bias is not None
        return out.view(*h.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        h2, weight = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        dh = torch.mm(g2, weight).view(*ctx.lead, h2.shape[1]) if ctx.needs_input_grad[0] else None
        dw = torch.mm(g2.t(), h2) if ctx.needs_input_grad[1] else None
        db = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dh, dw, db


def lm_head(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(h, weight, bias)``: logits ``[..., vocab]`` from ``h`` ``[..., d_model]``.

    On CPU a float32/float64 output of 32 MiB or more is written into huge pages
    (:func:`~universality.hosts.ssm.heap.hugepage_empty`), saving ~16,000 page faults per
    64 MiB (the logits of a 16 x 256 batch over 4096 words); same values and gradients.
    """
    if (h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64) and weight.dtype == h.dtype
            and (bias is None or bias.dtype == h.dtype)):
        return _LMHead.apply(h, weight, bias)
    return F.linear(h, weight, bias)
