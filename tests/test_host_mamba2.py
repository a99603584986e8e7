"""Mamba-2 host against Hugging Face's Mamba2ForCausalLM and a plain float64 recurrence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import universality as uv
from hf_reference import assert_cache_matches_hidden_states
from universality.hosts.ssm.ssd import ssd_patched_states, ssd_readout, ssd_scan, ssd_states

N_LAYERS, D_MODEL, VOCAB, STATE, HEADS, HEAD_DIM, GROUPS = 2, 32, 89, 8, 4, 16, 2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(0)
    cfg = Mamba2Config(vocab_size=VOCAB, hidden_size=D_MODEL, state_size=STATE, num_hidden_layers=N_LAYERS, expand=2,
                       num_heads=HEADS, head_dim=HEAD_DIM, n_groups=GROUPS, conv_kernel=4, chunk_size=16,
                       time_step_min=0.01, time_step_max=0.5)
    model = Mamba2ForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.D.uniform_(-1, 1)
            layer.mixer.norm.weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("mamba2")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def host(ckpt):
    return uv.load_host(ckpt, device="cpu")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, VOCAB, (2, 37), generator=torch.Generator().manual_seed(2))


def _ssd_inputs(b=2, t=29, h=4, p=3, g=2, n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, p, generator=gen, dtype=torch.float64)
    dt = torch.nn.functional.softplus(torch.randn(b, t, h, generator=gen, dtype=torch.float64))
    A = -(torch.rand(h, generator=gen, dtype=torch.float64) + 0.1)
    B = torch.randn(b, t, g, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, t, g, n, generator=gen, dtype=torch.float64)
    D = torch.randn(h, generator=gen, dtype=torch.float64)
    return x, dt, A, B, C, D


def _numpy_states(x, dt, A, B):
    x, dt, A, B = (v.detach().numpy() for v in (x, dt, A, B))
    b, t, h, p = x.shape
    per_group = h // B.shape[2]
    S = np.zeros((b, h, p, B.shape[-1]))
    out = np.zeros((b, t, h, p, B.shape[-1]))
    for i in range(t):
        for k in range(h):
            S[:, k] = np.exp(dt[:, i, k] * A[k])[:, None, None] * S[:, k] + \
                (dt[:, i, k, None] * x[:, i, k])[:, :, None] * B[:, i, k // per_group, None, :]
        out[:, i] = S
    return out


def test_chunked_scan_equals_plain_recurrence():
    x, dt, A, B, C, D = _ssd_inputs()
    ref_states = _numpy_states(x, dt, A, B)
    np.testing.assert_allclose(ssd_states(x, dt, A, B).numpy(), ref_states, rtol=1e-10, atol=1e-12)
    y_ref = ssd_readout(torch.from_numpy(ref_states), C, x, D)
    for chunk in (1, 4, 8, 64):  # 29 positions: padded last chunk for 4 and 8
        torch.testing.assert_close(ssd_scan(x, dt, A, B, C, D, chunk=chunk), y_ref, rtol=1e-10, atol=1e-10)


def test_chunked_scan_gradients_match_loop():
    args = [v.requires_grad_() for v in _ssd_inputs(t=13)]
    x, dt, A, B, C, D = args
    g1 = torch.autograd.grad(ssd_scan(*args, chunk=4).pow(2).sum(), args)
    g2 = torch.autograd.grad(ssd_readout(ssd_states(x, dt, A, B), C, x, D).pow(2).sum(), args)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_patched_states_carry_forward():
    x, dt, A, B, _, _ = _ssd_inputs(b=1, t=6)
    old = ssd_states(x, dt, A, B)
    new = old.clone()
    new[0, 2, 1] = 3.0  # head 1 at position 2
    used = ssd_patched_states(old, new, x, dt, A, B)
    assert torch.equal(used[:, :3], new[:, :3])
    expect = torch.exp(dt[0, 3, 1] * A[1]) * 3.0 + dt[0, 3, 1] * x[0, 3, 1][:, None] * B[0, 3, 0][None, :]
    torch.testing.assert_close(used[0, 3, 1], expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(used[0, 3, 0], old[0, 3, 0], rtol=0, atol=0)  # other heads untouched


def test_logits_hidden_states_and_invariant_match_hf(host, tokens):
    assert host.model_type == "mamba2" and host.arch == "mamba"
    with torch.no_grad():
        logits, cache = host.run_with_cache(tokens)
        ref = host.model(tokens, output_hidden_states=True, use_cache=False)
    torch.testing.assert_close(logits, ref.logits, rtol=0, atol=1e-4)
    # the layout of hidden_states changed in transformers 5.25 (embeddings first): derived, not assumed
    assert_cache_matches_hidden_states(cache, host.model, tokens, atol=1e-5, n_layers=N_LAYERS)
    for i in range(N_LAYERS):
        torch.testing.assert_close(cache[f"blocks.{i}.resid_post"] - cache[f"blocks.{i}.resid_pre"],
                                   cache[f"blocks.{i}.mixer_out"], rtol=0, atol=1e-6)
    b, t = tokens.shape
    shapes = {"ssm.in_x": (b, t, HEADS, HEAD_DIM), "ssm.gate": (b, t, HEADS, HEAD_DIM), "ssm.dt": (b, t, HEADS),
              "ssm.B": (b, t, GROUPS, STATE), "ssm.C": (b, t, GROUPS, STATE), "ssm.y": (b, t, HEADS, HEAD_DIM)}
    for suffix, shape in shapes.items():
        assert tuple(cache[f"blocks.0.{suffix}"].shape) == shape, suffix


def test_identity_and_zero_replacement(host, tokens):
    with torch.no_grad():
        base = host(tokens)
        for name in [f"blocks.1.{p}" for p in host.block_points]:
            same = host.run_with_hooks(tokens, {name: lambda x: x.clone()})
            torch.testing.assert_close(same, base, rtol=0, atol=1e-5, msg=f"identity replacement of {name}")
            zeroed = host.run_with_hooks(tokens, {name: torch.zeros_like})
            assert (zeroed - base).abs().max() > 1e-3, f"zero-ablating {name} left the logits unchanged"


def test_last_state_equals_plain_recurrence(ckpt, tokens):
    host64 = uv.load_host(ckpt, device="cpu", dtype="float64")
    p = "blocks.1."
    with torch.no_grad():
        _, cache = host64.run_with_cache(tokens, names=[p + s for s in ("ssm.conv_out", "ssm.dt", "ssm.B", "ssm.state")])
    A = -torch.exp(host64.model.backbone.layers[1].mixer.A_log.detach())
    ref = _numpy_states(cache[p + "ssm.conv_out"], cache[p + "ssm.dt"], A, cache[p + "ssm.B"])
    np.testing.assert_allclose(cache[p + "ssm.state"][:, -1].numpy(), ref[:, -1], rtol=1e-10, atol=1e-12)


def test_weight_gradients_match_hf(host, tokens):
    params = dict(host.model.named_parameters())
    host.model.zero_grad(set_to_none=True)
    host(tokens).log_softmax(-1)[..., 5].mean().backward()
    ours = {k: v.grad.clone() for k, v in params.items() if v.grad is not None}
    host.model.zero_grad(set_to_none=True)
    host.model(tokens, use_cache=False).logits.log_softmax(-1)[..., 5].mean().backward()
    for k, v in params.items():
        if v.grad is not None:
            torch.testing.assert_close(ours[k], v.grad, rtol=1e-3, atol=1e-5, msg=f"gradient of {k}")
    host.model.zero_grad(set_to_none=True)
