"""The WKV kernel against an independent float64 reference: RWKV-4 time mixing as a causal softmax.

Per channel, ``wkv_t = sum_i softmax_i(L_t)_i v_i`` with logits ``L_t,i = k_i - (t-1-i) w``
for ``i < t`` and ``u + k_t`` for ``i = t`` (``w = exp(time_decay)``): a formulation
that shares no code or recurrence with the kernel and is stable by construction.
"""

from __future__ import annotations

import pytest
import torch

from universality.hosts.wkv import (cumulative_channels, cumulative_wkv, initial_state, output_from_states, scan_states,
                                   scan_wkv, shift_states, wkv)

#: every kernel, on inputs it is exact for: the dispatcher and the scan on anything, the prefix sums on slow decays
KERNELS = {"wkv": (wkv, {}), "scan": (scan_wkv, {}), "cumulative": (cumulative_wkv, {"decay_shift": -4.0})}


def softmax_reference(k, v, time_decay, time_first):
    """wkv [b, t, C] by an explicit per-channel causal softmax over positions (float64, autograd-friendly)."""
    k, v = k.double(), v.double()
    w, u = torch.exp(time_decay.double()), time_first.double()
    t = k.shape[1]
    pos = torch.arange(t, dtype=torch.float64)
    lag = (pos[:, None] - 1 - pos[None, :])  # [t, i]: t-1-i
    logits = k[:, None, :, :] - lag[None, :, :, None] * w  # [b, t, i, C]
    diag = torch.eye(t, dtype=torch.bool)[None, :, :, None]
    logits = torch.where(diag, (u + k)[:, :, None, :].expand_as(logits), logits)
    future = (pos[None, :] > pos[:, None])[None, :, :, None]
    logits = logits.masked_fill(future, float("-inf"))
    return (torch.softmax(logits, dim=2) * v[:, None, :, :]).sum(2)


def real_states_reference(k, v, time_decay):
    """Plain float64 step-by-step recurrence of the real numerator and denominator [b, t, C] each."""
    k, v, w = k.double(), v.double(), torch.exp(time_decay.double())
    a = torch.zeros_like(k[:, 0])
    b = torch.zeros_like(k[:, 0])
    nums, dens = [], []
    for i in range(k.shape[1]):
        a = torch.exp(-w) * a + torch.exp(k[:, i]) * v[:, i]
        b = torch.exp(-w) * b + torch.exp(k[:, i])
        nums.append(a), dens.append(b)
    return torch.stack(nums, 1), torch.stack(dens, 1)


def _inputs(b=3, t=11, c=5, dtype=torch.float64, key_scale=2.0, decay_scale=1.5, seed=0, decay_shift=0.0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(b, t, c, generator=g, dtype=torch.float64) * key_scale
    v = torch.randn(b, t, c, generator=g, dtype=torch.float64)
    td = torch.randn(c, generator=g, dtype=torch.float64) * decay_scale + decay_shift
    tf = torch.randn(c, generator=g, dtype=torch.float64)
    return [x.to(dtype) for x in (k, v, td, tf)]


@pytest.mark.parametrize("kernel", KERNELS)
def test_forward_matches_softmax_reference_float64(kernel):
    fn, kw = KERNELS[kernel]
    k, v, td, tf = _inputs(**kw)
    assert torch.allclose(fn(k, v, td, tf), softmax_reference(k, v, td, tf), atol=1e-12, rtol=1e-10)


def test_dispatch_and_the_guard_is_needed():
    """``wkv`` takes the prefix sums when the guard passes every channel and the scan otherwise; the prefix sums
    applied to a channel the guard rejects are wrong (their denominators underflow), which is why it is rejected."""
    k, v, td, tf = _inputs(t=40, c=6, dtype=torch.float32)
    td = td.clone()
    td[0] = 4.0  # e^4 = 55 per step: the exponents span ~2,000 nats over 40 positions
    mask = cumulative_channels(k, td, tf)
    assert bool(mask.any()) and not bool(mask[0])
    ref = softmax_reference(k, v, td, tf)
    assert torch.equal(wkv(k, v, td, tf), scan_wkv(k, v, td, tf))
    assert torch.allclose(wkv(k, v, td, tf).double(), ref, atol=2e-5, rtol=1e-4)
    naive = cumulative_wkv(k, v, td, tf)[..., 0].double()
    assert not (torch.isfinite(naive).all() and torch.allclose(naive, ref[..., 0], atol=1e-3))
    slow = torch.full_like(td, -4.0)
    assert bool(cumulative_channels(k, slow, tf).all())
    assert torch.equal(wkv(k, v, slow, tf), cumulative_wkv(k, v, slow, tf))


@pytest.mark.parametrize("kernel", [wkv, scan_wkv])
def test_forward_stable_for_extreme_keys_and_decays_float32(kernel):
    k, v, td, tf = _inputs(t=40, c=6, key_scale=30.0, decay_scale=3.0, dtype=torch.float32)
    td = td.clone()
    td[0], td[1] = 5.0, -8.0  # decay exp(-148) per step, and nearly none
    y = kernel(k, v, td, tf)
    assert torch.isfinite(y).all()
    ref = softmax_reference(k, v, td, tf)
    assert torch.allclose(y.double(), ref, atol=2e-5, rtol=1e-4)


def test_state_path_equals_fused_path():
    k, v, td, tf = _inputs(dtype=torch.float32)
    states = scan_states(k, v, td)
    assert states.shape == (*k.shape, 3)
    y = output_from_states(shift_states(states), k, v, tf)
    assert torch.allclose(y, wkv(k, v, td, tf), atol=1e-6)


def test_states_equal_plain_recurrence():
    k, v, td, _ = _inputs()
    states = scan_states(k, v, td)
    a, b = real_states_reference(k, v, td)
    num, den, scale = states.unbind(-1)
    assert torch.allclose(num * torch.exp(scale), a, rtol=1e-10, atol=1e-12)
    assert torch.allclose(den * torch.exp(scale), b, rtol=1e-10, atol=1e-12)
    assert (den >= 1 - 1e-12).all()  # log_scale is the running max, so den >= 1


def test_scan_continues_from_a_given_state():
    k, v, td, _ = _inputs(t=12)
    full = scan_states(k, v, td)
    s = 5
    rest = scan_states(k[:, s + 1:], v[:, s + 1:], td, init=full[:, s])
    assert torch.allclose(rest, full[:, s + 1:], atol=1e-12)
    assert torch.equal(shift_states(full)[:, 0], initial_state(3, 5, torch.float64))


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_match_autograd_through_reference(kernel):
    fn, kw = KERNELS[kernel]
    k, v, td, tf = _inputs(b=2, t=9, c=4, **kw)
    ours = [x.clone().requires_grad_() for x in (k, v, td, tf)]
    ref = [x.clone().requires_grad_() for x in (k, v, td, tf)]
    g = torch.randn(2, 9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (fn(*ours) * g).sum().backward()
    (softmax_reference(*ref) * g).sum().backward()
    for name, a, b in zip(("k", "v", "time_decay", "time_first"), ours, ref):
        assert torch.allclose(a.grad, b.grad, atol=1e-10, rtol=1e-8), name


@pytest.mark.parametrize("kernel", [wkv, scan_wkv])
def test_gradients_stable_for_extreme_inputs_float32(kernel):
    k, v, td, tf = _inputs(b=2, t=30, c=4, key_scale=25.0, dtype=torch.float32, seed=5)
    td = td.clone()
    td[0] = 4.5
    ours = [x.clone().requires_grad_() for x in (k, v, td, tf)]
    ref = [x.double().requires_grad_() for x in (k, v, td, tf)]
    kernel(*ours).sum().backward()
    softmax_reference(*ref).sum().backward()
    for name, a, b in zip(("k", "v", "time_decay", "time_first"), ours, ref):
        assert torch.isfinite(a.grad).all(), name
        assert torch.allclose(a.grad.double(), b.grad, atol=1e-3, rtol=1e-3), name


def test_gradcheck_fused_and_state_paths():
    inputs = [x.requires_grad_() for x in _inputs(b=2, t=6, c=3)]
    assert torch.autograd.gradcheck(scan_wkv, inputs)
    assert torch.autograd.gradcheck(wkv, inputs)
    assert torch.autograd.gradcheck(cumulative_wkv, [x.requires_grad_() for x in _inputs(b=2, t=6, c=3, decay_shift=-4.0)])

    def via_states(k, v, td, tf):
        return output_from_states(shift_states(scan_states(k, v, td)), k, v, tf)

    assert torch.autograd.gradcheck(via_states, inputs)


@pytest.mark.parametrize("kernel", [wkv, scan_wkv, cumulative_wkv])
def test_single_position_is_the_value(kernel):
    k, v, td, tf = _inputs(t=1)
    assert torch.allclose(kernel(k, v, td, tf), v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    k, v, td, tf = _inputs(b=4, t=64, c=32, dtype=torch.float32)
    ins = [x.cuda().requires_grad_() for x in (k, v, td, tf)]
    y = wkv(*ins)
    y.sum().backward()
    cpu = [x.clone().requires_grad_() for x in (k, v, td, tf)]
    wkv(*cpu).sum().backward()
    assert torch.allclose(y.cpu(), wkv(k, v, td, tf), atol=1e-5)
    for a, b in zip(ins, cpu):
        assert torch.allclose(a.grad.cpu(), b.grad, atol=1e-4, rtol=1e-4)


def test_thread_count_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ins = [x.requires_grad_() for x in _inputs(b=2, t=5, c=3)]
        wkv(*ins).sum().backward()
        scan_states(*[x.detach() for x in ins[:2]], ins[2].detach())
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
