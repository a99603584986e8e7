"""Mamba's causal depthwise conv + activation, with a fused C kernel (SiLU, CPU) and a torch fallback.

``x`` is ``[b, t, d]`` (a strided view such as the x half of ``in_proj`` is fine),
``weight`` the HF ``Conv1d`` weight ``[d, 1, k]``, ``bias`` ``[d]`` or ``None``.
"""

from __future__ import annotations

import ctypes

import torch

from ._ckernel import kernel_threads, load_kernel
from .ops import causal_depthwise_conv

_BLOCK = 16


def _ptr(t: torch.Tensor | None):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` (or a contiguous copy) whose rows are evenly strided, and that row stride."""
    b, t, d = x.shape
    if x.stride(2) == 1 and x.stride(0) == t * x.stride(1):
        return x, x.stride(1)
    return x.contiguous(), d


def conv_silu_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """C forward of ``silu(causal_depthwise_conv(x))``: ``(out [b, t, d], saved)``, ``saved`` being what
    :func:`conv_silu_backward` needs (``x`` rows as the kernel read them, the transposed weight, the bias)."""
    lib = load_kernel()
    b, t, d = x.shape
    xr, xs = _rows(x)
    Wt = weight.reshape(d, -1).t().contiguous()
    bc = bias.contiguous() if bias is not None else None
    out = x.new_empty(b, t, d)
    getattr(lib, _name("fwd", x.dtype))(_ptr(xr), xs, _ptr(Wt), _ptr(bc), _ptr(out), b, t, d, Wt.shape[0],
                                        kernel_threads(b * t * d))
    return out, (xr, xs, Wt, bc)


def conv_silu_backward(saved, dout: torch.Tensor, dx_out: torch.Tensor | None = None):
    """C backward of :func:`conv_silu_forward` for ``dout`` [b, t, d]: ``(dx, dWt [k, d], dbias [d])``.

    ``dx`` is written into ``dx_out`` when given (a [b, t, d] view with unit channel stride and evenly
    strided rows, e.g. the x half of in_proj's gradient), else into a new tensor.
    """
    lib = load_kernel()
    xr, xs, Wt, bc = saved
    b, t, d = dout.shape
    k = Wt.shape[0]
    nt = kernel_threads(b * t * d)
    dout = dout.contiguous()
    dx = dout.new_empty(b, t, d) if dx_out is None else dx_out
    dW = dout.new_zeros(nt, k, d)
    db = dout.new_zeros(nt, d)
    getattr(lib, _name("bwd", dout.dtype))(_ptr(xr), xs, _ptr(Wt), _ptr(bc), _ptr(dout), _ptr(dx), dx.stride(1),
                                           _ptr(dW), _ptr(db), b, t, d, k, nt)
    return dx, dW.sum(0), db.sum(0)


class _ConvSiLUC(torch.autograd.Function):
    """C forward and backward of ``silu(causal_depthwise_conv(x))``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        out, saved = conv_silu_forward(x, weight, bias)
        ctx.save_for_backward(*saved[:1], *saved[2:])
        ctx.xs, ctx.weight_shape, ctx.has_bias = saved[1], weight.shape, bias is not None
        return out

    @staticmethod
    def backward(ctx, dout):
        xr, Wt, bc = ctx.saved_tensors
        dx, dWt, db = conv_silu_backward((xr, ctx.xs, Wt, bc), dout)
        return dx, dWt.t().reshape(ctx.weight_shape), (db if ctx.has_bias else None)


def _name(kind: str, dtype: torch.dtype) -> str:
    return f"conv_silu_{kind}_{'f32' if dtype == torch.float32 else 'f64'}"


def conv_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act, act_name: str,
             use_kernel: bool = True) -> torch.Tensor:
    """``act(causal_depthwise_conv(x, weight, bias))`` as ``[b, t, d]``; fused C kernel when possible.

    The kernel is used for ``act_name == "silu"`` on CPU float32/float64 tensors whose
    channel count is a multiple of 16 (every released Mamba); otherwise torch ops.
    """
    fits = (use_kernel and act_name in ("silu", "swish") and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype) and x.shape[-1] % _BLOCK == 0)
    if fits and load_kernel() is not None:
        return _ConvSiLUC.apply(x, weight, bias)
    return act(causal_depthwise_conv(x, weight, bias))
