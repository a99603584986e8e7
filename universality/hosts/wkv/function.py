"""``wkv(k, v, time_decay, time_first)``: the fused WKV autograd function.

Forward: one no-grad pass over time updating the state in preallocated
time-major buffers (a handful of in-place ops per step), then the output for
all positions at once from the stored states (:func:`.scan.output_from_states`).

Backward (hand-written, no autograd graph over time): with real states ``a, b``,
denominator ``D_t = b_{t-1} + e^{u+k_t}`` and incoming gradient ``g_t``, the
adjoints ``alpha_t = dL/da_t``, ``beta_t = dL/db_t`` run backwards::

    alpha_{t-1} = e^{-w} alpha_t + g_t / D_t          beta_{t-1} = e^{-w} beta_t - g_t wkv_t / D_t

and the input gradients follow position by position::

    dL/dv_t = g_t e^{u+k_t}/D_t + e^{k_t} alpha_t
    dL/dk_t = g_t e^{u+k_t}(v_t - wkv_t)/D_t + e^{k_t} (alpha_t v_t + beta_t)
    dL/du   = sum_t g_t e^{u+k_t}(v_t - wkv_t)/D_t
    dL/dw   = -sum_t e^{-w} (alpha_t a_{t-1} + beta_t b_{t-1})

The adjoints are kept as ``alpha_hat * exp(-q)`` with ``q`` a running minimum of
log denominators, so ``e^{k_t - q_t}`` and ``e^{log_scale_{t-1} - w - q_t}`` are
at most 1: every factor stays finite for any decay, as in the forward.
"""

from __future__ import annotations

import torch

from .cumulative import cumulative_wkv_if_exact
from .scan import EXP_FLOOR, _scan_into_buffers, compute_dtype, floored_exp, initial_state, one_thread

#: stand-in for +infinity as the adjoints' log scale before the last position
_BIG = 1e38


class _WKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k, v, time_decay, time_first):
        dt = compute_dtype(k.dtype)
        b, t, c = k.shape
        kt = k.detach().to(dt).transpose(0, 1).contiguous()
        vt = v.detach().to(dt).transpose(0, 1).contiguous()
        w = torch.exp(time_decay.detach().to(dt))
        u = time_first.detach().to(dt)
        init = initial_state(b, c, dt, k.device)
        with one_thread(kt.device):
            nums, dens, scales = _scan_into_buffers(kt, vt, w, init[..., 0], init[..., 1], init[..., 2])
        # states before each position: shift by one, the empty state first
        prev_num = torch.cat([init[None, ..., 0], nums[:-1]])
        prev_den = torch.cat([init[None, ..., 1], dens[:-1]])
        prev_scale = torch.cat([init[None, ..., 2], scales[:-1]])
        del nums, dens, scales
        bonus_k = u + kt
        top = torch.maximum(prev_scale, bonus_k)
        e_old = floored_exp(prev_scale - top)
        e_new = floored_exp(bonus_k - top)
        den = e_old * prev_den + e_new
        y = (e_old * prev_num + e_new * vt) / den
        ctx.save_for_backward(kt, vt, w, u, prev_num, prev_den, prev_scale, y)
        ctx.in_dtypes = (k.dtype, v.dtype, time_decay.dtype, time_first.dtype)
        return y.transpose(0, 1).to(k.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        kt, vt, w, u, prev_num, prev_den, prev_scale, y = ctx.saved_tensors
        dt = kt.dtype
        g = grad_y.to(dt).transpose(0, 1)
        bonus_k = u + kt
        top = torch.maximum(prev_scale, bonus_k)
        e_old = floored_exp(prev_scale - top)
        e_new = floored_exp(bonus_k - top)
        g_over_den = g / (e_old * prev_den + e_new)  # real g/D = g_over_den * exp(-top)
        direct_v = g_over_den * e_new
        direct_k = direct_v * (vt - y)
        into_a = g_over_den
        into_b = -g_over_den * y
        with one_thread(kt.device):
            alpha, beta, logq = _adjoint_scan(into_a, into_b, top, w)
        ek = floored_exp(kt - logq)
        grad_v = direct_v + ek * alpha
        grad_k = direct_k + ek * (alpha * vt + beta)
        grad_u = direct_k.sum((0, 1))
        old_weight = floored_exp(prev_scale - w - logq)
        grad_w = -(old_weight * (alpha * prev_num + beta * prev_den)).sum((0, 1))
        kd, vd, tdd, tfd = ctx.in_dtypes
        return (grad_k.transpose(0, 1).to(kd), grad_v.transpose(0, 1).to(vd),
                (grad_w * w).to(tdd), grad_u.to(tfd))


def _adjoint_scan(into_a, into_b, top, w):
    """Adjoints of the states after each position, scaled: ``(alpha_hat, beta_hat, q)``, each [t, b, C].

    ``alpha_t = alpha_hat_t * exp(-q_t)``; position ``t`` feeds ``into_* [t] * exp(-top[t])``
    into the adjoint of the state after ``t - 1``.
    """
    t = into_a.shape[0]
    alpha = torch.empty_like(into_a)
    beta = torch.empty_like(into_a)
    logq = torch.empty_like(into_a)
    alpha[t - 1] = 0
    beta[t - 1] = 0
    logq[t - 1] = _BIG
    carry = torch.empty_like(into_a[0])
    c_old = torch.empty_like(into_a[0])
    c_new = torch.empty_like(into_a[0])
    for i in range(t - 1, 0, -1):
        torch.add(logq[i], w, out=carry)
        q_new = logq[i - 1]
        torch.minimum(carry, top[i], out=q_new)
        torch.sub(q_new, carry, out=c_old).clamp_(min=EXP_FLOOR).exp_()
        torch.sub(q_new, top[i], out=c_new).clamp_(min=EXP_FLOOR).exp_()
        torch.mul(c_old, alpha[i], out=alpha[i - 1]).addcmul_(c_new, into_a[i])
        torch.mul(c_old, beta[i], out=beta[i - 1]).addcmul_(c_new, into_b[i])
    return alpha, beta, logq


def scan_wkv(k: torch.Tensor, v: torch.Tensor, time_decay: torch.Tensor, time_first: torch.Tensor) -> torch.Tensor:
    """:func:`wkv` [b, t, C] by the log-scaled scan over time (hand-written backward): stable for any decay and key,
    the path :func:`wkv` takes unless the prefix sums can hold every channel."""
    return _WKV.apply(k, v, time_decay, time_first)


def wkv(k: torch.Tensor, v: torch.Tensor, time_decay: torch.Tensor, time_first: torch.Tensor) -> torch.Tensor:
    """RWKV-4 time mixing ``wkv`` ``[b, t, C]`` from keys and values ``[b, t, C]``, starting from the empty state.

    ``time_decay`` and ``time_first`` are the raw Hugging Face parameters ``[C]``
    (decay per step ``exp(-exp(time_decay))``, bonus ``time_first``). Runs in
    float64 for float64 inputs and float32 otherwise; returns ``k``'s dtype.
    When every channel's exponents span a bounded range (slow decays, or short rows; the guard of
    :func:`.cumulative.cumulative_channels`, checked in the compute dtype on the exponents the sums then use) it
    takes the vectorised prefix-sum path (:mod:`.cumulative`, autograd), otherwise the log-scaled scan with its
    hand-written backward (:func:`scan_wkv`; splitting the channels between both measured slower than either).
    Both are exact; gradients flow to all four inputs.
    """
    dt = compute_dtype(k.dtype)
    y = cumulative_wkv_if_exact(k.to(dt), v.to(dt), time_decay.to(dt), time_first.to(dt))
    return scan_wkv(k, v, time_decay, time_first) if y is None else y.to(k.dtype)
