"""Mamba-1 host against Hugging Face's own MambaForCausalLM and against plain float64 recurrences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import universality as uv
from hf_reference import assert_cache_matches_hidden_states
from universality import UniversalityError
from universality.hosts.ssm._ckernel import load_kernel

N_LAYERS, D_MODEL, VOCAB, STATE = 3, 32, 101, 8


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    cfg = MambaConfig(vocab_size=VOCAB, hidden_size=D_MODEL, state_size=STATE, num_hidden_layers=N_LAYERS, expand=2,
                      conv_kernel=4, time_step_min=0.01, time_step_max=0.5)
    model = MambaForCausalLM(cfg)
    with torch.no_grad():  # make D and A non-trivial so the tests see their effect
        for layer in model.backbone.layers:
            layer.mixer.D.uniform_(-1, 1)
            layer.mixer.A_log.add_(0.3 * torch.randn_like(layer.mixer.A_log))
    path = tmp_path_factory.mktemp("mamba")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def host(ckpt):
    return uv.load_host(ckpt, device="cpu")


@pytest.fixture(scope="module")
def host64(ckpt):
    return uv.load_host(ckpt, device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, VOCAB, (2, 21), generator=torch.Generator().manual_seed(1))


def _backends():
    return ["c", "torch"] if load_kernel() is not None else ["torch"]


def test_registration_and_vocabulary(host):
    assert host.arch == "mamba" and host.model_type == "mamba"
    assert (host.n_layers, host.d_model, host.vocab_size) == (N_LAYERS, D_MODEL, VOCAB)
    assert "mamba" in uv.supported_model_types() and "mamba2" in uv.supported_model_types()
    assert not any("mlp" in p for p in host.hook_points)
    assert host.hook_points[0] == "embed" and host.hook_points[-1] == "final_norm"
    with pytest.raises(UniversalityError, match="closest valid names"):
        host.run_with_cache(torch.zeros(1, 3, dtype=torch.long), names=["blocks.0.ssm.stat"])


@pytest.mark.parametrize("backend", _backends())
def test_logits_and_hidden_states_match_hf(host, tokens, backend):
    host.set_scan_backend(backend)
    try:
        with torch.no_grad():
            logits, cache = host.run_with_cache(tokens)
            ref = host.model(tokens, output_hidden_states=True, use_cache=False)
    finally:
        host.set_scan_backend("auto")
    torch.testing.assert_close(logits, ref.logits, rtol=0, atol=1e-4)
    # transformers 5.25 lists one entry per block (no embeddings first), then the final norm: derived, not assumed
    assert_cache_matches_hidden_states(cache, host.model, tokens, atol=1e-5, n_layers=N_LAYERS)
    assert "blocks.0.ssm.state" not in cache  # on demand only


def test_shapes_and_residual_invariant(host, tokens):
    with torch.no_grad():
        _, cache = host.run_with_cache(tokens, names=[n for n in host.hook_points if "blocks.1." in n])
    b, t, d, n = 2, 21, 2 * D_MODEL, STATE
    expect = {"ssm.in_x": (b, t, d), "ssm.gate": (b, t, d), "ssm.conv_out": (b, t, d), "ssm.dt": (b, t, d),
              "ssm.B": (b, t, n), "ssm.C": (b, t, n), "ssm.state": (b, t, d, n), "ssm.y": (b, t, d),
              "mixer_in": (b, t, D_MODEL), "mixer_out": (b, t, D_MODEL)}
    for suffix, shape in expect.items():
        assert tuple(cache[f"blocks.1.{suffix}"].shape) == shape, suffix
    torch.testing.assert_close(cache["blocks.1.resid_post"] - cache["blocks.1.resid_pre"], cache["blocks.1.mixer_out"],
                               rtol=0, atol=1e-6)
    assert (cache["blocks.1.ssm.dt"] > 0).all()


def test_identity_replacement_changes_nothing_and_zero_ablation_changes_logits(host, tokens):
    with torch.no_grad():
        base = host(tokens)
        for name in ["embed", "final_norm"] + [f"blocks.1.{p}" for p in host.block_points]:
            same = host.run_with_hooks(tokens, {name: lambda x: x.clone()})
            torch.testing.assert_close(same, base, rtol=0, atol=1e-6, msg=f"identity replacement of {name}")
            zeroed = host.run_with_hooks(tokens, {name: torch.zeros_like})
            assert (zeroed - base).abs().max() > 1e-3, f"zero-ablating {name} left the logits unchanged"


def test_last_state_equals_plain_float64_recurrence(host64, tokens):
    layer = 2
    p = f"blocks.{layer}."
    with torch.no_grad():
        _, cache = host64.run_with_cache(tokens, names=[p + s for s in ("ssm.conv_out", "ssm.dt", "ssm.B", "ssm.C",
                                                                          "ssm.state", "ssm.y")])
    mixer = host64.model.backbone.layers[layer].mixer
    x, dt, B, C, st, y = (cache[p + s].numpy() for s in ("ssm.conv_out", "ssm.dt", "ssm.B", "ssm.C", "ssm.state", "ssm.y"))
    A = -np.exp(mixer.A_log.detach().numpy())
    D = mixer.D.detach().numpy()
    for bi in range(x.shape[0]):
        h = np.zeros_like(A)
        for t in range(x.shape[1]):
            for c in range(A.shape[0]):
                for j in range(A.shape[1]):
                    h[c, j] = np.exp(dt[bi, t, c] * A[c, j]) * h[c, j] + dt[bi, t, c] * x[bi, t, c] * B[bi, t, j]
        np.testing.assert_allclose(st[bi, -1], h, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(y[bi, -1], h @ C[bi, -1] + D * x[bi, -1], rtol=1e-10, atol=1e-12)


def test_state_patch_is_read_out_and_carried_forward(host64, tokens):
    p, s = "blocks.1.", 7
    names = [p + "ssm.state", p + "ssm.y", p + "ssm.conv_out", p + "ssm.dt", p + "ssm.B", p + "ssm.C"]
    with torch.no_grad():
        _, clean = host64.run_with_cache(tokens, names=names)

        def patch(states):  # in place on purpose: hosts must notice in-place edits too
            states[:, s] = 0.5
            return None

        _, cache = host64.run_with_cache(tokens, names=names, hooks={p + "ssm.state": patch})
    mixer = host64.model.backbone.layers[1].mixer
    A = -torch.exp(mixer.A_log.detach())
    x, dt, B, C = (cache[p + k] for k in ("ssm.conv_out", "ssm.dt", "ssm.B", "ssm.C"))
    st, y = cache[p + "ssm.state"], cache[p + "ssm.y"]
    torch.testing.assert_close(st[:, :s], clean[p + "ssm.state"][:, :s], rtol=0, atol=0)
    assert torch.all(st[:, s] == 0.5)
    nxt = torch.exp(dt[:, s + 1, :, None] * A) * 0.5 + (dt[:, s + 1] * x[:, s + 1])[..., None] * B[:, s + 1, None, :]
    torch.testing.assert_close(st[:, s + 1], nxt, rtol=1e-12, atol=1e-12)  # the recurrence continues from the patch
    torch.testing.assert_close(y[:, s], 0.5 * C[:, s].sum(-1, keepdim=True) + mixer.D.detach() * x[:, s], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[:, :s], clean[p + "ssm.y"][:, :s], rtol=0, atol=1e-12)
    assert (y[:, s + 1 :] - clean[p + "ssm.y"][:, s + 1 :]).abs().max() > 1e-6


def test_gradients_through_hooks_match_naive_reference(host64, tokens):
    """Gradient w.r.t. a perturbation added at ssm.conv_out and ssm.dt: C backward vs autograd through the loop."""
    grads = {}
    for backend in _backends():
        host64.set_scan_backend(backend)
        dx = torch.zeros(2, 21, 2 * D_MODEL, dtype=torch.float64, requires_grad=True)
        ddt = torch.zeros_like(dx, requires_grad=True)
        logits = host64.run_with_hooks(tokens, {"blocks.0.ssm.conv_out": lambda x: x + dx, "blocks.0.ssm.dt": lambda t: t + ddt})
        loss = logits.log_softmax(-1)[..., 3].sum()
        grads[backend] = torch.autograd.grad(loss, (dx, ddt))
    host64.set_scan_backend("auto")
    assert grads["torch"][0].abs().max() > 0 and grads["torch"][1].abs().max() > 0
    for g in grads.values():
        for a, b in zip(g, grads["torch"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # and against a finite difference of the loss along the gradient direction (float64)
    direction = torch.randn_like(dx)
    eps = 1e-5
    with torch.no_grad():
        lp = host64.run_with_hooks(tokens, {"blocks.0.ssm.conv_out": lambda x: x + eps * direction}).log_softmax(-1)[..., 3].sum()
        lm = host64.run_with_hooks(tokens, {"blocks.0.ssm.conv_out": lambda x: x - eps * direction}).log_softmax(-1)[..., 3].sum()
    fd = (lp - lm) / (2 * eps)
    assert abs(float(fd) - float((grads["torch"][0] * direction).sum())) < 1e-6 * max(1.0, abs(float(fd)))


def test_weight_gradients_match_hf(host, tokens):
    params = dict(host.model.named_parameters())
    host.model.zero_grad(set_to_none=True)
    host(tokens).log_softmax(-1)[..., 5].mean().backward()
    ours = {k: v.grad.clone() for k, v in params.items() if v.grad is not None}
    host.model.zero_grad(set_to_none=True)
    host.model(tokens, use_cache=False).logits.log_softmax(-1)[..., 5].mean().backward()
    assert set(ours) == {k for k, v in params.items() if v.grad is not None}
    for k, v in params.items():
        torch.testing.assert_close(ours[k], v.grad, rtol=1e-3, atol=1e-5, msg=f"gradient of {k}")
    host.model.zero_grad(set_to_none=True)


@pytest.mark.skipif(load_kernel() is None, reason="the C kernels cannot be built here")
@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_other_kernel_builds_match_hf_logits_and_weight_gradients(host, tokens, isa, monkeypatch):
    """The whole host on the AVX2 (or baseline x86-64) build of the kernels, as an AVX2-only CPU runs it."""
    import platform

    from universality.hosts.ssm._ckernel import ISA_ENV_VAR
    from universality.precision import cpu_flags

    if platform.machine().lower() not in ("x86_64", "amd64") or (isa == "avx2" and not cpu_flags()["avx2"]):
        pytest.skip(f"this CPU cannot run the {isa} build")
    monkeypatch.setenv(ISA_ENV_VAR, isa)
    with torch.no_grad():
        torch.testing.assert_close(host(tokens), host.model(tokens, use_cache=False).logits, rtol=0, atol=1e-4)
    test_weight_gradients_match_hf(host, tokens)


def test_shift_kernel_in_conv_weights_shows_in_conv_out(host, tokens):
    mixer = host.model.backbone.layers[0].mixer
    saved_w, saved_b = mixer.conv1d.weight.detach().clone(), mixer.conv1d.bias.detach().clone()
    try:
        with torch.no_grad():  # edit in place: output t = input t-1 (kernel taps are [t-3, t-2, t-1, t])
            mixer.conv1d.weight.zero_()
            mixer.conv1d.weight[:, 0, 2] = 1.0
            mixer.conv1d.bias.zero_()
            _, cache = host.run_with_cache(tokens, names=["blocks.0.ssm.in_x", "blocks.0.ssm.conv_out"])
        x, out = cache["blocks.0.ssm.in_x"], cache["blocks.0.ssm.conv_out"]
        torch.testing.assert_close(out[:, 1:], torch.nn.functional.silu(x[:, :-1]), rtol=0, atol=1e-7)
        assert torch.all(out[:, 0] == 0)
    finally:
        with torch.no_grad():
            mixer.conv1d.weight.copy_(saved_w)
            mixer.conv1d.bias.copy_(saved_b)


def test_early_stop_and_bad_tokens(host, tokens):
    with torch.no_grad():
        logits, cache = host.run_with_cache(tokens, names=["blocks.0.resid_post"], return_logits=False)
    assert logits is None and set(cache) == {"blocks.0.resid_post"}
    with pytest.raises(UniversalityError, match="outside this model's vocabulary"):
        host(torch.tensor([[0, VOCAB]]))


def test_in_place_hooks_with_gradients(host, tokens):
    def zero_position_3(x):
        x[:, 3] = 0  # in place, returns None

    with torch.no_grad():
        ref = host.run_with_hooks(tokens, {"blocks.0.ssm.in_x": lambda x: torch.cat([x[:, :3], 0 * x[:, 3:4], x[:, 4:]], 1)})
    logits = host.run_with_hooks(tokens, {"blocks.0.ssm.in_x": zero_position_3})  # grad mode on
    torch.testing.assert_close(logits.detach(), ref, rtol=0, atol=1e-6)
