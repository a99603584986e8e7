"""The WKV state recurrence and the output computed from stored states.

State layout (what the host exposes as ``blocks.{i}.att.state``): a tensor
``[batch, seq, channels, 3]`` holding, for every position ``t``, the state
*after* token ``t`` has been absorbed, as ``(num, den, log_scale)`` along the
last axis (:data:`STATE_FIELDS`). The real numerator and denominator are
``num * exp(log_scale)`` and ``den * exp(log_scale)``; ``log_scale`` is the
running maximum ``max_{i<=t} (k_i - (t - i) w)``, so ``den >= 1`` and nothing
overflows. The triple is not unique (scaling ``num`` and ``den`` by ``e^c`` and
lowering ``log_scale`` by ``c`` is the same state); only the real values and the
ratio ``num / den`` mean anything.

``wkv_t`` reads the state after ``t - 1`` (:func:`shift_states`), so a state
replaced at position ``s`` changes ``wkv`` at ``s + 1`` only; to let a
replacement flow on through the recurrence, recompute the later states with
``scan_states(k[:, s+1:], v[:, s+1:], time_decay, init=new_state_s)``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

#: names of the last axis of a WKV state tensor
STATE_FIELDS = ("num", "den", "log_scale")
#: log scale of the empty state (exp of it is 0 in float32 and float64)
EMPTY_LOG_SCALE = -1e38
#: exponents below this are raised to it before exp. Every exp in the scan weighs a
#: term against one weighted exactly 1 (or, in the backward, scales an adjoint bounded
#: by the incoming gradient), so the change is below e^-60 ~ 1e-26 of the result's
#: scale, far under float64 resolution; it keeps values out of the denormal range,
#: where x86 arithmetic is ~60x slower
EXP_FLOOR = -60.0


def floored_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(max(x, EXP_FLOOR))``: exp that never returns a denormal (see :data:`EXP_FLOOR`)."""
    return torch.exp(torch.clamp(x, min=EXP_FLOOR))


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Run the enclosed per-step CPU loop on one intra-op thread, restoring the count after.

    Each step works on a [batch, channels] slice; splitting such small ops across
    threads costs a synchronization per op (ruinous on a busy machine) and gains
    nothing. The big vectorized ops around the loops keep every thread. Note the
    thread count is process-wide while the loop runs.
    """
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the scan runs in: float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def initial_state(batch: int, channels: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The empty state ``[batch, channels, 3]``: zero numerator and denominator, log scale -1e38."""
    s = torch.zeros(batch, channels, 3, dtype=compute_dtype(dtype), device=device)
    s[..., 2] = EMPTY_LOG_SCALE
    return s


def scan_states(k: torch.Tensor, v: torch.Tensor, time_decay: torch.Tensor,
                init: torch.Tensor | None = None) -> torch.Tensor:
    """States after every position: ``[b, t, C, 3]`` (layout in the module docstring).

    Args:
        k, v: keys and values ``[b, t, C]``.
        time_decay: the raw Hugging Face parameter ``[C]``; the per-step decay is ``exp(-exp(time_decay))``.
        init: state before position 0, ``[b, C, 3]`` (default: the empty state).

    Differentiable with autograd when gradients are enabled (a traced step loop);
    without gradients it writes into preallocated buffers.
    """
    dt = compute_dtype(k.dtype)
    b, t, c = k.shape
    if init is None:
        init = initial_state(b, c, dt, k.device)
    init = init.to(dt)
    w = torch.exp(time_decay.to(dt))
    kt = k.to(dt).transpose(0, 1)
    vt = v.to(dt).transpose(0, 1)
    num, den, scale = init[..., 0], init[..., 1], init[..., 2]
    tracked = torch.is_grad_enabled() and any(x.requires_grad for x in (k, v, time_decay, init))
    if tracked:
        nums, dens, scales = [], [], []
        with one_thread(k.device):
            for i in range(t):
                num, den, scale = _step(num, den, scale, kt[i], vt[i], w)
                nums.append(num), dens.append(den), scales.append(scale)
        return torch.stack([torch.stack(nums, 1), torch.stack(dens, 1), torch.stack(scales, 1)], -1)
    with torch.no_grad():
        kt, vt = kt.contiguous(), vt.contiguous()
        with one_thread(k.device):
            nums, dens, scales = _scan_into_buffers(kt, vt, w, num, den, scale)
        return torch.stack([nums, dens, scales], -1).transpose(0, 1)


def _step(num, den, scale, k, v, w):
    """One recurrence step: absorb (k, v) into the state, decaying the old state by exp(-w)."""
    decayed = scale - w
    new_scale = torch.maximum(decayed, k)
    e_old = floored_exp(decayed - new_scale)
    e_new = floored_exp(k - new_scale)
    return e_old * num + e_new * v, e_old * den + e_new, new_scale


def _scan_into_buffers(kt, vt, w, num, den, scale):
    """No-grad scan over time-major ``kt, vt`` [t, b, C]; returns (num, den, log_scale), each [t, b, C]."""
    nums = torch.empty_like(kt)
    dens = torch.empty_like(kt)
    scales = torch.empty_like(kt)
    decayed = torch.empty_like(kt[0])
    e_old = torch.empty_like(kt[0])
    e_new = torch.empty_like(kt[0])
    num, den, scale = num.contiguous(), den.contiguous(), scale.contiguous()
    for i in range(kt.shape[0]):
        torch.sub(scale, w, out=decayed)
        new_scale = scales[i]
        torch.maximum(decayed, kt[i], out=new_scale)
        torch.sub(decayed, new_scale, out=e_old).clamp_(min=EXP_FLOOR).exp_()
        torch.sub(kt[i], new_scale, out=e_new).clamp_(min=EXP_FLOOR).exp_()
        torch.mul(e_old, num, out=nums[i]).addcmul_(e_new, vt[i])
        torch.mul(e_old, den, out=dens[i]).add_(e_new)
        num, den, scale = nums[i], dens[i], new_scale
    return nums, dens, scales


def shift_states(states: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
    """States *before* every position ``[b, t, C, 3]``: ``init`` (default empty) then ``states[:, :-1]``."""
    b, _, c, _ = states.shape
    if init is None:
        init = initial_state(b, c, states.dtype, states.device)
    return torch.cat([init.to(states.dtype).unsqueeze(1), states[:, :-1]], 1)


def output_from_states(prev: torch.Tensor, k: torch.Tensor, v: torch.Tensor, time_first: torch.Tensor) -> torch.Tensor:
    """``wkv`` ``[b, t, C]`` from the states before each position ``prev`` ``[b, t, C, 3]``, keys, values and bonus ``u``.

    ``wkv_t = (a_{t-1} + e^{u+k_t} v_t) / (b_{t-1} + e^{u+k_t})``, evaluated with the
    larger exponent factored out. Vectorized over time; differentiable.
    """
    dt = prev.dtype
    k, v = k.to(dt), v.to(dt)
    num, den, scale = prev.unbind(-1)
    bonus_k = time_first.to(dt) + k
    top = torch.maximum(scale, bonus_k)
    e_old = floored_exp(scale - top)
    e_new = floored_exp(bonus_k - top)
    return (e_old * num + e_new * v) / (e_old * den + e_new)
