"""The Mamba-1 selective scan: C kernel vs pure torch, hand-written backward, state patching.

The kernel tests run once per instruction set the C library can be built for here (``isa``
fixture: ``native``, and on x86-64 ``avx2`` when the CPU has it and ``generic``): each build has
its own vector width and exp code, and each is checked against the same float64 references.
"""

from __future__ import annotations

import functools
import platform

import numpy as np
import pytest
import torch

from universality import UniversalityError
from universality.hosts.ssm import _ckernel as ck
from universality.hosts.ssm import scan as ss
from universality.hosts.ssm._ckernel import load_kernel
from universality.precision import cpu_flags

needs_c = pytest.mark.skipif(load_kernel() is None, reason="the C scan kernel cannot be built here (no gcc)")


def _isas() -> list[str]:
    """Kernel builds this machine can run: native, plus avx2 (CPU with AVX2) and generic on x86-64."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ["native"]
    return ["native", "avx2", "generic"] if cpu_flags()["avx2"] else ["native", "generic"]


@pytest.fixture(params=_isas())
def isa(request, monkeypatch):
    """Every kernel call of the test uses the library built for this instruction set (without gcc the
    tests marked ``needs_c`` skip, and the others run their torch path)."""
    monkeypatch.setenv(ck.ISA_ENV_VAR, request.param)
    return request.param


def _inputs(b=2, t=23, d=21, n=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=g, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(b, t, d, generator=g, dtype=dtype))
    A = -(torch.rand(d, n, generator=g, dtype=dtype) * 2 + 0.05)
    B = torch.randn(b, t, n, generator=g, dtype=dtype)
    C = torch.randn(b, t, n, generator=g, dtype=dtype)
    D = torch.randn(d, generator=g, dtype=dtype)
    return [v.requires_grad_() for v in (x, dt, A, B, C, D)]


def _numpy_scan(x, dt, A, B, C, D):
    """Plain float64 step-by-step recurrence: states [b, t, d, n] and y [b, t, d]."""
    x, dt, A, B, C, D = (v.detach().double().numpy() for v in (x, dt, A, B, C, D))
    b, t, d = x.shape
    h = np.zeros((b, d, A.shape[1]))
    states, ys = np.zeros((b, t, d, A.shape[1])), np.zeros((b, t, d))
    for i in range(t):
        h = np.exp(dt[:, i, :, None] * A[None]) * h + (dt[:, i] * x[:, i])[:, :, None] * B[:, i, None, :]
        states[:, i] = h
        ys[:, i] = (h * C[:, i, None, :]).sum(-1) + D * x[:, i]
    return states, ys


def test_torch_scan_matches_numpy_recurrence():
    args = _inputs()
    _, y_ref = _numpy_scan(*args)
    np.testing.assert_allclose(ss.selective_scan_torch(*args).detach().numpy(), y_ref, rtol=1e-10, atol=1e-10)


@needs_c
@pytest.mark.parametrize("d", [16, 21, 40])
def test_c_kernel_matches_torch_float64_values_and_grads(d, isa):
    args = _inputs(d=d)
    y_c = ss.selective_scan(*args, backend="c")
    y_t = ss.selective_scan_torch(*args)
    torch.testing.assert_close(y_c, y_t, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(y_c)
    g_c = torch.autograd.grad(y_c, args, grad_out)
    g_t = torch.autograd.grad(y_t, args, grad_out)
    for name, a, b in zip("x dt A B C D".split(), g_c, g_t):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


@needs_c
@pytest.mark.parametrize("d", [32, 19])
def test_gated_c_kernel_matches_torch_float64(d, isa):
    args = _inputs(d=d)
    gen = torch.Generator().manual_seed(5)
    zz = torch.randn(2, 23, 2 * d, generator=gen, dtype=torch.float64, requires_grad=True)
    z = zz[..., d:]  # a strided view, as the host's gate can be
    out_c = ss.selective_scan(*args, z=z, backend="c")
    out_t = ss.selective_scan_torch(*args) * torch.nn.functional.silu(z)
    torch.testing.assert_close(out_c, out_t, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(out_c)
    g_c = torch.autograd.grad(out_c, [*args, zz], grad_out)
    g_t = torch.autograd.grad(out_t, [*args, zz], grad_out)
    for name, a, b in zip("x dt A B C D z".split(), g_c, g_t):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


@functools.cache
def _float64_reference():
    """Inputs of the float32 test and their float64 step-by-step output and gradients (computed once)."""
    args64 = _inputs(b=3, t=64, d=48, n=16)
    _, y_ref = _numpy_scan(*args64)
    g64 = torch.autograd.grad(ss.selective_scan_torch(*args64).sum(), args64)
    return [v.detach() for v in args64], y_ref, [g.numpy() for g in g64]


@needs_c
def test_c_kernel_float32_close_to_float64_reference(isa):
    args64, y_ref, g64 = _float64_reference()
    args32 = [v.float().requires_grad_() for v in args64]
    y32 = ss.selective_scan(*args32, backend="c")
    np.testing.assert_allclose(y32.detach().numpy(), y_ref, rtol=1e-4, atol=1e-4)
    g32 = torch.autograd.grad(y32.sum(), args32)
    for a, b in zip(g32, g64):
        np.testing.assert_allclose(a.numpy(), b, rtol=2e-3, atol=2e-3)


@needs_c
def test_c_backward_passes_gradcheck(isa):
    args = _inputs(b=1, t=6, d=17, n=3, seed=1)
    assert torch.autograd.gradcheck(lambda *a: ss.selective_scan(*a, backend="c"), args, eps=1e-6, atol=1e-7)
    z = torch.randn(1, 6, 17, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: ss.selective_scan(*a[:6], z=a[6], backend="c"), [*args, z], eps=1e-6, atol=1e-7)


def _raw_steps(b, t, d, dtype, seed):
    """Pre-activation step sizes spanning softplus' regimes (deep negative, near 0, above its threshold 20)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(b, t, d, generator=g, dtype=dtype) * 8
    raw[0, 0, :3] = torch.tensor([-40.0, 25.0, 0.0], dtype=dtype)
    bias = torch.randn(d, generator=g, dtype=dtype)
    return raw.requires_grad_(), bias.requires_grad_()


@needs_c
@pytest.mark.parametrize("d", [32, 19])
def test_fused_dt_bias_and_softplus_match_torch_float64(d, isa):
    x, _, A, B, C, D = _inputs(d=d)
    raw, bias = _raw_steps(2, 23, d, torch.float64, seed=3)
    z = torch.randn(2, 23, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    leaves = [x, raw, bias, A, B, C, D, z]
    out_c = ss.selective_scan(x, raw, A, B, C, D, z=z, backend="c", dt_bias=bias, dt_softplus=True)
    out_t = ss.selective_scan_torch(x, torch.nn.functional.softplus(raw + bias), A, B, C, D) * torch.nn.functional.silu(z)
    torch.testing.assert_close(out_c, out_t, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(out_c)
    for name, a, b in zip("x dt dt_bias A B C D z".split(), torch.autograd.grad(out_c, leaves, grad_out),
                          torch.autograd.grad(out_t, leaves, grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


@needs_c
def test_fused_softplus_float32_close_to_float64_reference(isa):
    """The float32 kernel's own softplus/sigmoid (vectorised polynomials) against float64 torch."""
    x64, _, A64, B64, C64, D64 = _inputs(b=2, t=40, d=48, n=16)
    raw64, bias64 = _raw_steps(2, 40, 48, torch.float64, seed=7)
    args64 = [x64, raw64, bias64, A64, B64, C64, D64]
    args32 = [v.detach().float().requires_grad_() for v in args64]

    def fused(x, raw, bias, A, B, C, D):
        return ss.selective_scan(x, raw, A, B, C, D, backend="c", dt_bias=bias, dt_softplus=True)

    def reference(x, raw, bias, A, B, C, D):
        return ss.selective_scan_torch(x, torch.nn.functional.softplus(raw + bias), A, B, C, D)

    y32, y64 = fused(*args32), reference(*args64)
    np.testing.assert_allclose(y32.detach().numpy(), y64.detach().numpy(), rtol=1e-4, atol=1e-4)
    for a, b in zip(torch.autograd.grad(y32.sum(), args32), torch.autograd.grad(y64.sum(), args64)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=2e-3)


@needs_c
def test_fused_dt_backward_passes_gradcheck(isa):
    x, _, A, B, C, D = _inputs(b=1, t=6, d=17, n=3, seed=2)
    raw, bias = _raw_steps(1, 6, 17, torch.float64, seed=5)
    raw = (raw.detach() / 8).requires_grad_()  # keep finite differences away from softplus' flat tail
    assert torch.autograd.gradcheck(
        lambda x, raw, bias, A, B, C, D: ss.selective_scan(x, raw, A, B, C, D, backend="c", dt_bias=bias, dt_softplus=True),
        [x, raw, bias, A, B, C, D], eps=1e-6, atol=1e-7)


def test_states_match_numpy_and_readout_gives_y(isa):
    args = _inputs()
    x, dt, A, B, C, D = args
    states_ref, y_ref = _numpy_scan(*args)
    with torch.no_grad():
        states = ss.scan_states(x, dt, A, B)  # C kernel when available (no grad needed)
        states_torch = ss._states_torch(x, dt, A, B)
        np.testing.assert_allclose(states.numpy(), states_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(states_torch.numpy(), states_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ss.readout(states, C, x, D).numpy(), y_ref, rtol=1e-10, atol=1e-10)


def test_patched_states_use_and_carry_replaced_entries():
    x, dt, A, B, C, D = (v.detach() for v in _inputs(b=1, t=9, d=4, n=3))
    old = ss._states_torch(x, dt, A, B)
    new = old.clone()
    s = 4
    new[0, s, 1, 2] = 7.5  # one replaced entry at position s
    used = ss.patched_states(old, new, x, dt, A, B)
    # independent recurrence: same as the plain one but h[s, 1, 2] forced to 7.5
    xn, dtn, An, Bn = (v.numpy() for v in (x, dt, A, B))
    h = np.zeros((4, 3))
    for i in range(9):
        h = np.exp(dtn[0, i, :, None] * An) * h + (dtn[0, i] * xn[0, i])[:, None] * Bn[0, i][None]
        if i == s:
            h[1, 2] = 7.5
        np.testing.assert_allclose(used[0, i].numpy(), h, rtol=1e-12, atol=1e-12)
    assert torch.equal(used[:, :s], old[:, :s])
    assert not torch.allclose(used[:, s + 1 :, 1, 2], old[:, s + 1 :, 1, 2])
    same = old.clone()
    assert ss.patched_states(old, same, x, dt, A, B) is same  # nothing replaced: the hook's tensor is used as is


def test_backend_choice_and_errors(monkeypatch):
    with pytest.raises(UniversalityError, match="scan backend 'fast'"):
        ss.selective_scan(*_inputs(), backend="fast")
    with pytest.raises(UniversalityError, match="'cuda'"):
        ss.resolve_backend("cuda", torch.device("cpu"), torch.float32)
    monkeypatch.setattr(ss, "load_kernel", lambda: None)
    assert ss.resolve_backend("auto", torch.device("cpu"), torch.float32) == "torch"
    assert ss.resolve_backend("auto", torch.device("cpu"), torch.bfloat16) == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scan_matches_torch():
    if not ss.mamba_ssm_available():
        pytest.skip("mamba-ssm not installed")
    args = [v.detach().float().cuda() for v in _inputs(d=32, n=16)]
    torch.testing.assert_close(ss.selective_scan(*args, backend="cuda"), ss.selective_scan_torch(*args), rtol=1e-3, atol=1e-3)


@needs_c
def test_fused_conv_silu_kernel_matches_torch_conv1d_and_gradcheck(isa):
    from universality.hosts.ssm.conv import _ConvSiLUC, conv_act

    gen = torch.Generator().manual_seed(3)
    xz = torch.randn(3, 11, 64, generator=gen, dtype=torch.float64, requires_grad=True)
    x = xz[..., :32]  # strided view, as the x half of in_proj
    w = torch.randn(32, 1, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(32, generator=gen, dtype=torch.float64, requires_grad=True)
    out = conv_act(x, w, bias, torch.nn.functional.silu, "silu")
    ref = torch.nn.functional.silu(torch.nn.functional.conv1d(x.transpose(1, 2), w, bias, padding=3, groups=32)[..., :11].transpose(1, 2))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (xz, w, bias), grad_out), torch.autograd.grad(ref, (xz, w, bias), grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    small = [torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True), torch.randn(16, 1, 3, dtype=torch.float64, requires_grad=True),
             torch.randn(16, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda *a: _ConvSiLUC.apply(*a), small)


@needs_c
def test_rms_norm_kernel_matches_formula_and_gradcheck(isa):
    from universality.hosts.ssm.ops import _RMSNormC, rms_norm

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 7, 32, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(32, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    out = rms_norm(x, w, 1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (x, w), grad_out), torch.autograd.grad(ref, (x, w), grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x, w: _RMSNormC.apply(x, w, 1e-5), (x[:2, :3].detach().requires_grad_(), w))


@needs_c
@pytest.mark.parametrize("batch", [1, 3])  # 1: threads split channels (partial sums); 3: threads own batch rows
def test_c_kernel_threaded_with_strided_B_C(batch, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the two-thread kernel path, whatever the setting
    x, dt, A, _, _, D = _inputs(b=batch, t=300, d=48, n=5)  # large enough (> 65k elements) for two threads
    BC = torch.randn(batch, 300, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    B, C = BC[..., 3:8], BC[..., 8:]  # strided views, as split off x_proj's output
    y_t = ss.selective_scan_torch(x, dt, A, B, C, D)  # the reference once; every kernel build against it
    grad_out = torch.randn_like(y_t)
    g_t = torch.autograd.grad(y_t, (x, dt, A, BC, D), grad_out)
    for isa in _isas():
        monkeypatch.setenv(ck.ISA_ENV_VAR, isa)
        y_c = ss.selective_scan(x, dt, A, B, C, D, backend="c")
        torch.testing.assert_close(y_c, y_t, rtol=1e-10, atol=1e-10, msg=isa)
        for a, b in zip(torch.autograd.grad(y_c, (x, dt, A, BC, D), grad_out), g_t):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=isa)


def test_two_headed_linear_gradcheck():
    from universality.hosts.ssm.ops import two_headed_linear

    gen = torch.Generator().manual_seed(7)
    u = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(10, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(10, generator=gen, dtype=torch.float64, requires_grad=True)
    x, z = two_headed_linear(u, w, bias, 4)
    torch.testing.assert_close(torch.cat([x, z], -1), torch.nn.functional.linear(u, w, bias))
    assert torch.autograd.gradcheck(lambda u, w, b: two_headed_linear(u, w, b, 4), (u, w, bias))
    assert torch.autograd.gradcheck(lambda u, w: two_headed_linear(u, w, None, 6)[1], (u, w))  # one half unused


@needs_c
def test_float32_decays_match_float64_exp_over_a_wide_range(isa):
    """exp(dt A) of the float32 kernel (2^w polynomial) against float64 for dt A from -80 to 0: within 4 ulp
    plus the rounding of the argument w = dt A log2(e) (relative |w| 2^-24, of the size of dt A's own rounding)."""
    d = 64
    A = -torch.cat([torch.linspace(0.0, 3.0, d // 2), torch.linspace(3.0, 80.0, d // 2)]).view(d, 1)
    x = torch.zeros(1, 2, d)
    x[:, 0] = 1.0  # step 0 puts h = dt x B = 1 in every channel; step 1 only decays it
    dt, B, C = torch.ones(1, 2, d), torch.ones(1, 2, 1), torch.ones(1, 2, 1)
    y = ss.selective_scan(x, dt, A, B, C, None, backend="c")
    expected = torch.exp(A.double().view(-1))
    rel = ((y[0, 1].double() - expected) / expected).abs()
    allowed = 4 * 2.0**-24 + A.double().view(-1).abs() * 1.4427 * 2.0**-24
    assert torch.all(rel <= allowed), (rel / allowed).max()


@needs_c
def test_mixer_core_matches_step_by_step_torch_float64_and_gradcheck(monkeypatch):
    from universality.hosts.ssm.mixer_core import mixer_core

    gen = torch.Generator().manual_seed(11)
    b, t, d, n, rank, k = 2, 9, 16, 4, 3, 4

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    xz, conv_w, conv_b = rand(b, t, 2 * d), rand(d, 1, k, scale=0.5), rand(d, scale=0.1)
    x_proj_w, dt_proj_w, dt_bias = rand(rank + 2 * n, d, scale=0.3), rand(d, rank, scale=0.3), rand(d, scale=0.5)
    A, D = (-(torch.rand(d, n, generator=gen, dtype=torch.float64) + 0.2)).requires_grad_(), rand(d)
    args = (xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D)

    def reference(xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D):
        x, z = xz[..., :d], xz[..., d:]
        xc = torch.nn.functional.silu(torch.nn.functional.conv1d(
            x.transpose(1, 2), conv_w, conv_b, padding=k - 1, groups=d)[..., :t].transpose(1, 2))
        dt_low, B, C = torch.split(xc @ x_proj_w.t(), [rank, n, n], dim=-1)
        dt = torch.nn.functional.softplus(dt_low @ dt_proj_w.t() + dt_bias)
        return ss.selective_scan_torch(xc, dt, A, B, C, D) * torch.nn.functional.silu(z)

    want = reference(*args)
    grad_out = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    want_grads = torch.autograd.grad(want, args, grad_out)
    for isa in _isas():  # every kernel build against the one reference
        monkeypatch.setenv(ck.ISA_ENV_VAR, isa)
        out = mixer_core(*args, rank)
        torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10, msg=isa)
        for got, ref in zip(torch.autograd.grad(out, args, grad_out), want_grads):
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9, msg=isa)
    monkeypatch.delenv(ck.ISA_ENV_VAR)
    assert torch.autograd.gradcheck(lambda *a: mixer_core(*a, rank), args)


def test_lm_head_matches_linear_and_gradcheck():
    from universality.hosts.ssm.ops import lm_head

    gen = torch.Generator().manual_seed(12)
    h = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(lm_head(h, w, bias), torch.nn.functional.linear(h, w, bias), rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(lm_head, (h, w, bias))
    assert torch.autograd.gradcheck(lambda h, w: lm_head(h, w, None), (h, w))
