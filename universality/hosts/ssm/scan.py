"""Mamba-1 selective scan: a fast C kernel (CPU), mamba-ssm (CUDA), and a pure-torch fallback.

All functions take the ``[batch, time, channels]`` layout the host produces:

* ``x``  [b, t, d]  scan input (``ssm.conv_out``)
* ``dt`` [b, t, d]  step sizes Δ after softplus (``ssm.dt``)
* ``A``  [d, n]     continuous decay, negative (``-exp(A_log)``)
* ``B``, ``C`` [b, t, n]
* ``D``  [d] or ``None``

and compute, per channel ``c`` and state slot ``j``::

    h_t[c, j] = exp(dt_t[c] A[c, j]) h_{t-1}[c, j] + dt_t[c] x_t[c] B_t[j]      (h_{-1} = 0)
    y_t[c]    = sum_j h_t[c, j] C_t[j] + D[c] x_t[c]
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from ..._errors import UniversalityError
from ._ckernel import kernel_threads, load_kernel

BACKENDS = ("auto", "c", "torch", "cuda")


# ----------------------------------------------------------------------------- pure torch
def selective_scan_torch(x, dt, A, B, C, D=None):
    """Reference scan by a plain loop over time (autograd-friendly). Returns y [b, t, d]."""
    b, t, d = x.shape
    h = x.new_zeros(b, d, A.shape[1])
    dA = torch.exp(dt.unsqueeze(-1) * A)  # [b, t, d, n]
    dtx = dt * x
    ys = []
    for i in range(t):
        h = dA[:, i] * h + dtx[:, i, :, None] * B[:, i, None, :]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, i]))
    y = torch.stack(ys, dim=1)
    return y if D is None else y + x * D


def scan_states(x, dt, A, B, use_kernel: bool = True):
    """Hidden state after every position, ``[b, t, d, n]`` (materialised; autograd-friendly).

    Without gradients on CPU float32/float64 the C kernel writes them; otherwise a torch loop.
    """
    lib = load_kernel() if use_kernel else None
    if (lib is not None and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and all(v.dtype == x.dtype for v in (dt, A, B)) and not _needs_grad(x, dt, A, B)):
        return _c_forward(lib, x, dt, A, B, torch.zeros_like(B), None, want_y=False, want_states=True)[2]
    return _states_torch(x, dt, A, B)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(v.requires_grad for v in tensors)


def _states_torch(x, dt, A, B):
    b, t, d = x.shape
    h = x.new_zeros(b, d, A.shape[1])
    dtx = dt * x
    out = []
    for i in range(t):
        h = torch.exp(dt[:, i, :, None] * A) * h + dtx[:, i, :, None] * B[:, i, None, :]
        out.append(h)
    return torch.stack(out, dim=1)


def patched_states(old, new, x, dt, A, B):
    """States after replacing some of them: the recurrence continues from every replaced value.

    ``old`` are the states the scan produced, ``new`` what a hook returned (both
    [b, t, d, n]). With ``m = new != old``::

        h'_t = new_t                                  where m_t
        h'_t = exp(dt_t A) h'_{t-1} + dt_t x_t B_t    elsewhere

    so a replaced entry is both read out at its own position and carried forward.
    Returns ``new`` itself when nothing changed.
    """
    changed = new != old
    if not bool(changed.any()):
        return new
    first = int(changed.flatten(2).any(-1).any(0).nonzero()[0])  # earliest position with a change
    b, t, d = x.shape
    dtx = dt * x
    out = [new[:, i] for i in range(first)]
    h = new[:, first - 1] if first > 0 else x.new_zeros(b, d, A.shape[1])
    for i in range(first, t):
        step = torch.exp(dt[:, i, :, None] * A) * h + dtx[:, i, :, None] * B[:, i, None, :]
        h = torch.where(changed[:, i], new[:, i], step)
        out.append(h)
    return torch.stack(out, dim=1)


def readout(states, C, x, D=None):
    """``y_t = sum_j h_t[:, j] C_t[j] + D x_t`` from states [b, t, d, n]; returns [b, t, d]."""
    y = torch.einsum("btdn,btn->btd", states, C)
    return y if D is None else y + x * D


# ----------------------------------------------------------------------------- C kernel
def _ptr(t: torch.Tensor | None):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


def _fn(lib, kind: str, dtype: torch.dtype):
    if dtype == torch.float32:
        return getattr(lib, f"scan_{kind}_f32")
    if dtype == torch.float64:
        return getattr(lib, f"scan_{kind}_f64")
    raise TypeError(f"the C scan supports float32/float64, not {dtype}")


_BLOCK = 16  # channels per job in the C kernel (BLK in selective_scan.c); d is zero-padded to a multiple


def _pad_channels(v: torch.Tensor | None, d_pad: int) -> torch.Tensor | None:
    """Zero-pad the last axis to ``d_pad`` and make contiguous."""
    if v is None:
        return None
    extra = d_pad - v.shape[-1]
    return (torch.nn.functional.pad(v, (0, extra)) if extra else v).contiguous()


def _gate_rows(z: torch.Tensor | None, d_pad: int) -> tuple[torch.Tensor | None, int]:
    """The gate as the kernel reads it (rows evenly strided, unit channel stride) and its row stride."""
    if z is None:
        return None, 0
    b, t, d = z.shape
    if d == d_pad and z.stride(2) == 1 and z.stride(0) == t * z.stride(1):
        return z, z.stride(1)
    return _pad_channels(z, d_pad), d_pad


def _rows(v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``v`` [b, t, n] (or a contiguous copy) with evenly strided rows and unit last stride, and its row stride."""
    b, t, n = v.shape
    if v.stride(2) == 1 and (b == 1 or v.stride(0) == t * v.stride(1)):
        return v, v.stride(1)
    return v.contiguous(), n


def _c_forward(lib, x, dt, A, B, C, D, z=None, want_y=True, want_states=False, dt_bias=None, dt_softplus=False):
    """Run the C forward; returns ``(y, y * silu(z), states)`` with ``None`` for what was not asked.

    The step size is ``dt`` (+ ``dt_bias``), passed through softplus when ``dt_softplus``.
    """
    b, t, d = x.shape
    n = A.shape[1]
    dp = -(-d // _BLOCK) * _BLOCK
    xp, dtp, Dp, dtbp = _pad_channels(x, dp), _pad_channels(dt, dp), _pad_channels(D, dp), _pad_channels(dt_bias, dp)
    zp, zs = _gate_rows(z, dp)
    At = _pad_channels(A.t(), dp)
    (B, bs), (C, cs) = _rows(B), _rows(C)
    y = x.new_empty(b, t, dp) if want_y else None
    yg = x.new_empty(b, t, dp) if z is not None else None
    states = x.new_empty(b, t, dp, n) if want_states else None
    _fn(lib, "fwd", x.dtype)(_ptr(xp), _ptr(dtp), _ptr(dtbp), int(dt_softplus), _ptr(At), _ptr(B), _ptr(C), bs, cs, _ptr(Dp),
                             _ptr(zp), zs, _ptr(y), _ptr(yg), _ptr(states), b, t, dp, n, kernel_threads(b * t * dp * n))
    if dp != d:
        y = y[..., :d] if y is not None else None
        yg = yg[..., :d] if yg is not None else None
        states = states[:, :, :d] if states is not None else None
    return y, yg, states


def _summed(parts: torch.Tensor) -> torch.Tensor:
    """Sum of per-thread partials over the leading axis (no copy for one thread)."""
    return parts[0] if parts.shape[0] == 1 else parts.sum(0)


def _c_backward(lib, x, dt, A, B, C, D, z, dy, dt_bias=None, dt_softplus=False, dz_out=None):
    """C backward; ``dy`` is the gradient of ``y`` (or of ``y * silu(z)`` when ``z`` is given).

    Returns ``(dx, ddt, dA, dB, dC, dD, dz, ddt_bias)``; ``ddt`` is with respect to the raw ``dt`` input.
    ``dz`` is written into ``dz_out`` when given (a [b, t, d] view with unit channel stride and evenly
    strided rows, e.g. the z half of in_proj's gradient; ``d`` must then be a multiple of 16).
    """
    b, t, d = x.shape
    n = A.shape[1]
    dp = -(-d // _BLOCK) * _BLOCK
    nt = kernel_threads(b * t * dp * n)
    xp, dtp, Dp, dyp, dtbp = (_pad_channels(v, dp) for v in (x, dt, D, dy, dt_bias))
    zp, zs = _gate_rows(z, dp)
    At = _pad_channels(A.t(), dp)
    (B, bs), (C, cs) = _rows(B), _rows(C)
    dx, ddt = x.new_empty(b, t, dp), x.new_empty(b, t, dp)
    if dz_out is not None and (dp != d or dz_out.stride(2) != 1 or dz_out.stride(0) != t * dz_out.stride(1)):
        raise ValueError("dz_out needs d a multiple of 16, unit channel stride and evenly strided rows")
    dz = (x.new_empty(b, t, dp) if dz_out is None else dz_out) if z is not None else None
    dAt = x.new_zeros(nt, n, dp)
    dD = x.new_zeros(nt, dp)
    ddtb = x.new_zeros(nt, dp) if dt_bias is not None else None
    rows_mode = b >= nt  # threads own whole batch rows: dB/dC written in place (see selective_scan.c)
    dB = x.new_empty(b, t, n) if rows_mode else x.new_zeros(nt, b, t, n)
    dC = x.new_empty(b, t, n) if rows_mode else x.new_zeros(nt, b, t, n)
    dzs = dz.stride(1) if dz is not None else dp
    _fn(lib, "bwd", x.dtype)(_ptr(xp), _ptr(dtp), _ptr(dtbp), int(dt_softplus), _ptr(At), _ptr(B), _ptr(C), bs, cs, _ptr(Dp),
                             _ptr(zp), zs, _ptr(dyp), _ptr(dx), _ptr(ddt), _ptr(dz), dzs, _ptr(dAt), _ptr(dB), _ptr(dC),
                             _ptr(dD), _ptr(ddtb), b, t, dp, n, nt)
    if not rows_mode:
        dB, dC = dB.sum(0), dC.sum(0)
    dz = dz[..., :d] if dz is not None else None
    ddtb = _summed(ddtb)[:d] if ddtb is not None else None
    return dx[..., :d], ddt[..., :d], _summed(dAt)[:, :d].t(), dB, dC, _summed(dD)[:d], dz, ddtb


class _SelectiveScanC(torch.autograd.Function):
    """Autograd wrapper: C forward, C backward (adjoint recurrence in reverse time).

    With a gate ``z`` the output is ``y * silu(z)`` computed and differentiated in
    the same pass (``y`` itself is never stored); the step size is
    ``[softplus](dt + dt_bias)``, also inside the pass.
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
        y, yg, _ = _c_forward(load_kernel(), x, dt, A, B, C, D, z=z, want_y=z is None, dt_bias=dt_bias,
                              dt_softplus=dt_softplus)
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias)
        ctx.has_D, ctx.has_z, ctx.dt_softplus = D is not None, z is not None, dt_softplus
        return yg if z is not None else y

    @staticmethod
    def backward(ctx, dy):
        x, dt, A, B, C, D, z, dt_bias = ctx.saved_tensors
        dx, ddt, dA, dB, dC, dD, dz, ddtb = _c_backward(load_kernel(), x, dt, A, B, C, D, z, dy, dt_bias, ctx.dt_softplus)
        return dx, ddt, dA, dB, dC, (dD if ctx.has_D else None), (dz if ctx.has_z else None), ddtb, None


# ----------------------------------------------------------------------------- CUDA
def _mamba_ssm_scan(x, dt, A, B, C, D, z=None, dt_bias=None, dt_softplus=False):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # lazy: optional extra

    y = selective_scan_fn(x.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A.float().contiguous(),
                          B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
                          D.float() if D is not None else None,
                          z=z.transpose(1, 2).contiguous() if z is not None else None,
                          delta_bias=dt_bias.float() if dt_bias is not None else None, delta_softplus=dt_softplus)
    return y.transpose(1, 2).to(x.dtype)


def mamba_ssm_available() -> bool:
    """Whether the optional CUDA kernels of ``mamba-ssm`` can be imported."""
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401
    except Exception:  # noqa: BLE001  (any import-time failure means "not usable")
        return False
    return True


# ----------------------------------------------------------------------------- dispatch
def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Which implementation ``selective_scan`` uses for ``backend`` on ``device``/``dtype``."""
    if backend not in BACKENDS:
        raise UniversalityError(f"scan backend '{backend}' is not valid; use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        if backend == "c" and (device.type != "cpu" or load_kernel() is None or dtype not in (torch.float32, torch.float64)):
            raise UniversalityError("scan backend 'c' needs a CPU tensor of float32/float64 and a working gcc; use 'auto' or 'torch'")
        if backend == "cuda" and (device.type != "cuda" or not mamba_ssm_available()):
            raise UniversalityError("scan backend 'cuda' needs CUDA tensors and the mamba-ssm package; use 'auto' or 'torch'")
        return backend
    if device.type == "cuda" and mamba_ssm_available():
        return "cuda"
    if device.type == "cpu" and dtype in (torch.float32, torch.float64) and load_kernel() is not None:
        return "c"
    return "torch"


def selective_scan(x, dt, A, B, C, D=None, z=None, backend: str = "auto", dt_bias=None, dt_softplus: bool = False):
    """Selective scan output ``y`` [b, t, d] (including the ``D`` skip), or ``y * silu(z)`` when a gate is given.

    Gradients flow to every input.

    Args:
        x, dt: [b, t, d]; A: [d, n]; B, C: [b, t, n]; D: [d] or None;
        z: optional gate [b, t, d] (Mamba's z half of in_proj), fused into the pass.
        backend: ``"auto"`` (mamba-ssm on CUDA when importable, else the C kernel
            on CPU, else torch), ``"c"``, ``"cuda"`` or ``"torch"``.
        dt_bias, dt_softplus: the step size used is ``softplus(dt + dt_bias)`` when
            ``dt_softplus`` (else ``dt + dt_bias``); ``dt_bias`` [d] or None. Mamba's
            dt_proj bias and activation, applied inside the pass by the C and CUDA kernels.
    """
    if x.dtype in (torch.float16, torch.bfloat16):  # scan in float32, as HF does for half models
        up = [v.float() if v is not None else None for v in (x, dt, A, B, C, D, z)]
        bias = dt_bias.float() if dt_bias is not None else None
        return selective_scan(*up, backend=backend, dt_bias=bias, dt_softplus=dt_softplus).to(x.dtype)
    which = resolve_backend(backend, x.device, x.dtype)
    if which == "c":
        return _SelectiveScanC.apply(x, dt, A, B, C, D, z, dt_bias, bool(dt_softplus))
    if which == "cuda":
        return _mamba_ssm_scan(x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    dt = dt + dt_bias if dt_bias is not None else dt
    y = selective_scan_torch(x, F.softplus(dt) if dt_softplus else dt, A, B, C, D)
    return y if z is None else y * F.silu(z)
