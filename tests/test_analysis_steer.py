"""Steering: planted CAA on a constructed host, state steering against float64 recurrences, dose-response, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers as tf

import universality as uv
from affine_host import AffineHost
from test_host_rwkv import tiny_rwkv
from universality import UniversalityError
from universality.analysis.steer import (PromptSet, SteeringVector, clamp_hooks, contrast_vector, dose_response,
                                         feature_vector, pad_prompts, steered_logits, steering_hooks, token_class_mass)


def test_planted_caa_moves_logits_as_predicted():
    host = AffineHost(n_layers=3, d=8, vocab=11)
    pos, neg = PromptSet([[1], [4, 1]]), PromptSet([[2], [7, 2]])
    sv = contrast_vector(host, pos, neg, "blocks.0.resid_post")
    m = host.model
    E, A0 = m.embed.weight.detach().double(), m.A[0].detach().double()
    torch.testing.assert_close(sv.vector, (E[1] - E[2]) @ A0.T)  # tokens do not mix: a deterministic contrast
    tokens = torch.tensor([[3, 5, 6, 9]])
    logits = steered_logits(host, tokens, steering_hooks(host, sv, 2.5, torch.tensor([2])), 2.5)
    M, c = host.to_final(0)
    h0 = (E[tokens[0]] @ A0.T + m.b[0].detach().double())
    h0[2:] += 2.5 * sv.vector
    final = h0 @ M.T + c
    ref = F.layer_norm(final, (8,), m.norm.weight.detach().double(), m.norm.bias.detach().double()) @ m.W_U.detach().double().T
    torch.testing.assert_close(logits[0].double(), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[0, :2], host(tokens)[0, :2])  # before the start: untouched


def test_dose_response_is_monotone_on_a_planted_direction():
    host = AffineHost(n_layers=2, d=8, vocab=11, seed=3)
    m, target = host.model, 5
    with torch.no_grad():
        m.norm.weight.fill_(1.0)
        m.norm.bias.zero_()
        m.W_U[target] *= 3.0
    M, _ = host.to_final(0)
    u = m.W_U[target].detach().double()
    u = u - u.mean()  # what the final LayerNorm keeps of the target's unembedding
    sv = SteeringVector("blocks.0.resid_post", torch.linalg.solve(M, u), "residual")
    prompts = PromptSet([[i, (i + 3) % 11, (i + 5) % 11, (i + 7) % 11] for i in range(11)])
    mult = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    dr = dose_response(host, sv, prompts, mult, token_class_mass([target]), "target mass", start=1, n_boot=50)
    assert dr.monotone() and dr.values[-1] > dr.values[0] + 0.3
    assert dr.n_forwards == len(mult)  # one forward of the prompt batch per multiplier
    for v, (lo, hi) in zip(dr.values, dr.ci):
        assert lo - 1e-12 <= v <= hi + 1e-12
    assert type(dr).from_dict(dr.to_dict()) == dr


def _mamba_host(save_model):
    cfg = tf.MambaConfig(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4,
                         time_step_min=0.01, time_step_max=0.5)
    torch.manual_seed(0)
    model = tf.MambaForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.D.uniform_(-1, 1)
    return uv.load_host(save_model(model))


def test_mamba_state_steering_follows_the_recurrence(save_model):
    host = _mamba_host(save_model)
    layer, P = 1, 5
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    pts = [f"blocks.{layer}.ssm.{p}" for p in ("conv_out", "dt", "B", "C", "y")]
    _, base = host.run_with_cache(tokens, pts)
    v = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sv = SteeringVector(f"blocks.{layer}.ssm.state", v, "state")
    _, steered = host.run_with_cache(tokens, pts, hooks=steering_hooks(host, sv, 1.5, torch.tensor([P, P])))
    # float64 reference: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t, the state after P - 1 raised by 1.5 v
    mixer = host.model.backbone.layers[layer].mixer
    A, D = -torch.exp(mixer.A_log.double()), mixer.D.double()
    x, dt, B, C = (base[p].double() for p in pts[:4])
    h = torch.zeros(2, 32, 4, dtype=torch.float64)
    ys = []
    for t in range(12):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        if t == P - 1:
            h = h + 1.5 * v
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    y_ref = torch.stack(ys, 1)
    torch.testing.assert_close(steered[pts[4]][:, :P], base[pts[4]][:, :P])  # the prefix is untouched
    torch.testing.assert_close(steered[pts[4]].double()[:, P:], y_ref[:, P:], atol=1e-4, rtol=1e-4)
    assert (steered[pts[4]][:, P:] - base[pts[4]][:, P:]).abs().max() > 1e-2


def test_rwkv_state_steering_follows_the_recurrence(save_model):
    host = uv.load_host(save_model(tiny_rwkv()))  # 4 blocks, the stream halved after blocks 1 and 3
    layer, P = 1, 4
    tokens = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(3))
    pts = [f"blocks.{layer}.att.{p}" for p in ("k", "v", "wkv")]
    _, base = host.run_with_cache(tokens, pts)
    v = torch.rand(24, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    sv = SteeringVector(f"blocks.{layer}.att.state", v, "state")
    _, steered = host.run_with_cache(tokens, pts, hooks=steering_hooks(host, sv, 2.0, torch.tensor([P, P])))
    att = host.model.rwkv.blocks[layer].attention
    w, u = torch.exp(att.time_decay.double()), att.time_first.double()
    k, val = base[pts[0]].double(), base[pts[1]].double()
    num = den = torch.zeros(2, 24, dtype=torch.float64)
    out = []
    for t in range(10):  # real-valued float64 WKV: wkv_t reads the state after t - 1
        e = torch.exp(u + k[:, t])
        out.append((num + e * val[:, t]) / (den + e))
        num, den = torch.exp(-w) * num + torch.exp(k[:, t]) * val[:, t], torch.exp(-w) * den + torch.exp(k[:, t])
        if t == P - 1:
            num, den = num + 2.0 * v[:, 0], den + 2.0 * v[:, 1]
    ref = torch.stack(out, 1)
    torch.testing.assert_close(steered[pts[2]][:, :P], base[pts[2]][:, :P])
    torch.testing.assert_close(steered[pts[2]].double()[:, P:], ref[:, P:], atol=1e-4, rtol=1e-4)
    assert (steered[pts[2]][:, P:] - base[pts[2]][:, P:]).abs().max() > 1e-3


class _Coder:
    """A linear dictionary stand-in: codes = relu(x @ W_dec.T) (W_dec rows orthonormal)."""

    def __init__(self, d=8, n=4):
        self.W_dec = torch.linalg.qr(torch.randn(d, n, generator=torch.Generator().manual_seed(0)))[0].T.contiguous()

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T)


def test_feature_steering_add_and_clamp():
    host = AffineHost()
    coder = _Coder()
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6]])
    sv = feature_vector(coder, 2, "blocks.1.resid_post")
    assert sv.method == "feature" and torch.equal(sv.vector, coder.W_dec[2].double())
    _, base = host.run_with_cache(tokens, ["blocks.1.resid_post"])
    _, added = host.run_with_cache(tokens, ["blocks.1.resid_post"], hooks=steering_hooks(host, sv, 3.0, torch.tensor([0, 1])))
    x = base["blocks.1.resid_post"]
    torch.testing.assert_close(added["blocks.1.resid_post"][0], x[0] + 3.0 * coder.W_dec[2])
    torch.testing.assert_close(added["blocks.1.resid_post"][1, 1:], x[1, 1:] + 3.0 * coder.W_dec[2])
    _, clamped = host.run_with_cache(tokens, ["blocks.1.resid_post"], hooks=clamp_hooks(coder, 2, 5.0, "blocks.1.resid_post", torch.tensor([0, 0])))
    # the spliced dictionary: decode(codes with latent 2 set to 5) + the reconstruction error x - decode(codes)
    codes = coder.encode(x)
    clamped_codes = codes.clone()
    clamped_codes[..., 2] = 5.0
    want = clamped_codes @ coder.W_dec + (x - codes @ coder.W_dec)
    torch.testing.assert_close(clamped["blocks.1.resid_post"], want, atol=1e-5, rtol=1e-5)


def test_bad_input():
    host = AffineHost()
    good = PromptSet([[1, 2]], "tokA")
    with pytest.raises(UniversalityError, match="negative prompts are empty"):
        contrast_vector(host, good, PromptSet([], "tokA"), "blocks.0.resid_post")
    with pytest.raises(UniversalityError, match="different tokenizers"):
        contrast_vector(host, good, PromptSet([[3]], "tokB"), "blocks.0.resid_post")
    with pytest.raises(UniversalityError, match="blocks 0..2"):
        contrast_vector(host, good, PromptSet([[3]], "tokA"), "blocks.7.resid_post")
    with pytest.raises(UniversalityError, match="unknown hook point"):
        contrast_vector(host, good, PromptSet([[3]], "tokA"), "blocks.0.ssm.state")
    with pytest.raises(UniversalityError, match="outside this affine host's vocabulary"):
        contrast_vector(host, good, PromptSet([[300]], "tokA"), "blocks.0.resid_post")
    sv = SteeringVector("blocks.0.resid_post", torch.full((8,), 1e30, dtype=torch.float64))
    with pytest.raises(UniversalityError, match="multiplier 1e\\+10 makes .* non-finite"):
        dose_response(host, sv, good, [0.0, 1e10], token_class_mass([1]), "m")
    with pytest.raises(UniversalityError, match="latents 0..3"):
        feature_vector(_Coder(), 9, "blocks.0.resid_post")
    tokens, lengths = pad_prompts([[1, 2, 3], [4]])
    assert tokens.tolist() == [[1, 2, 3], [4, 0, 0]] and lengths.tolist() == [3, 1]


def test_cross_model_steering_with_a_planted_partner():
    from universality.analysis.steer_cross import compare_effects, control_directions, cross_model_steering

    a, b = AffineHost(seed=0), AffineHost(seed=0)  # B computes A's function: the partner direction is known
    W = torch.randn(6, 8, generator=torch.Generator().manual_seed(5))
    coder_a, coder_b = _Coder(), _Coder()
    coder_a.W_dec = coder_b.W_dec = W
    freq = torch.tensor([0.1, 0.5, 0.2, 0.21, 0.9, 0.05])
    prompts = PromptSet([[i, (2 * i + 1) % 11, (3 * i + 2) % 11, i] for i in range(11)])
    res = cross_model_steering(a, coder_a, 2, "blocks.0.resid_post", b, coder_b, 2, "blocks.0.resid_post", prompts, freq,
                               multiplier=4.0, top_k=3)
    assert res.random_latent_b == 3  # the latent whose frequency (0.21) is closest to the partner's (0.2)
    m, rl, rd = (res.conditions[c] for c in ("matched", "random_latent", "random_direction"))
    assert m["kl"] == pytest.approx(0, abs=1e-9) and m["top_overlap"] == 1.0 and m["r"] == pytest.approx(1.0)
    assert rl["kl"] > 1e-3 and rd["kl"] > 1e-3 and rl["r"] < 0.99 and rd["r"] < 0.99
    dirs = control_directions(W, freq, 2, seed=1)
    assert dirs["random_direction"].norm() == pytest.approx(float(W[2].norm()))
    with pytest.raises(UniversalityError, match="vocabularies differ"):
        compare_effects(torch.zeros(3), torch.zeros(4))
    with pytest.raises(UniversalityError, match="different vocabularies"):
        cross_model_steering(a, coder_a, 2, "blocks.0.resid_post", AffineHost(vocab=12), coder_b, 2, "blocks.0.resid_post",
                             prompts, freq)


def test_prompt_sets_are_cut_to_a_context():
    p = PromptSet([[1, 2, 3, 4], [5]], "t", "x")
    assert p.truncated(2).prompts == [[1, 2], [5]] and p.truncated(None) is p


def _scan_reference(x, dt, B, C, A, D):
    """float64 Mamba-1 recurrence ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t``, ``y_t = h_t C_t + D x_t``: [b, t, d]."""
    h = torch.zeros(x.shape[0], x.shape[2], A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    return torch.stack(ys, 1)


def test_mamba_conv_state_steering_follows_the_recurrence(save_model):
    host = _mamba_host(save_model)  # d_conv 4: the conv state after a prefix is its last 3 inputs
    layer, P = 1, 5
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(5))
    pts = [f"blocks.{layer}.ssm.{p}" for p in ("in_x", "y")]
    _, base = host.run_with_cache(tokens, pts)
    v = torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    sv = SteeringVector(f"blocks.{layer}.ssm.conv_state", v, "state")
    _, steered = host.run_with_cache(tokens, pts, hooks=steering_hooks(host, sv, 1.5, torch.tensor([P, P])))
    # float64 reference: the suffix's conv reads inputs P-3 .. P-1 raised by 1.5 v; the prefix's conv reads the real ones
    m = host.model.backbone.layers[layer].mixer
    x_in = base[pts[0]].double()
    w, bias = m.conv1d.weight.double()[:, 0], m.conv1d.bias.double()  # [d, 4]
    rows = []
    for t in range(12):
        inputs = torch.stack([x_in[:, q] if q >= 0 else torch.zeros_like(x_in[:, 0]) for q in range(t - 3, t + 1)], -1)
        if t >= P:
            for j, q in enumerate(range(t - 3, t + 1)):
                if P - 3 <= q < P:
                    inputs[..., j] = inputs[..., j] + 1.5 * v[q - (P - 3)]
        rows.append(F.silu((inputs * w).sum(-1) + bias))
    x = torch.stack(rows, 1)  # [b, t, d]: conv_out as the steered host should see it
    rank, n = m.time_step_rank, m.ssm_state_size
    dt_low, B, C = torch.split(x @ m.x_proj.weight.double().T, [rank, n, n], dim=-1)
    dt = F.softplus(dt_low @ m.dt_proj.weight.double().T + m.dt_proj.bias.double())
    y_ref = _scan_reference(x, dt, B, C, -torch.exp(m.A_log.double()), m.D.double())
    torch.testing.assert_close(steered[pts[1]][:, :P], base[pts[1]][:, :P])  # the prefix is untouched
    torch.testing.assert_close(steered[pts[1]].double()[:, P:], y_ref[:, P:], atol=1e-4, rtol=1e-4)
    assert (steered[pts[1]][:, P:] - base[pts[1]][:, P:]).abs().max() > 1e-2
    # the contrast: the last 3 conv inputs of each prompt (zeros before a prompt shorter than 3)
    pos, neg = PromptSet([[1, 2, 3, 4], [5]]), PromptSet([[6, 7]])
    c = contrast_vector(host, pos, neg, f"blocks.{layer}.ssm.conv_state")
    xs = [host.run_with_cache(torch.tensor([p]), [pts[0]])[1][pts[0]][0].double() for p in (pos.prompts + neg.prompts)]
    last3 = [F.pad(a, (0, 0, 3, 0))[-3:] for a in xs]
    torch.testing.assert_close(c.vector, (last3[0] + last3[1]) / 2 - last3[2])
    assert c.method == "state" and c.vector.shape == (3, 32)


def test_mamba2_state_steering_follows_the_recurrence(save_model):
    cfg = tf.Mamba2Config(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4,
                          num_heads=4, head_dim=8, n_groups=2, chunk_size=8, time_step_min=0.01, time_step_max=0.5)
    torch.manual_seed(0)
    host = uv.load_host(save_model(tf.Mamba2ForCausalLM(cfg)))
    layer, P = 1, 5
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(7))
    pts = [f"blocks.{layer}.ssm.{p}" for p in ("conv_out", "dt", "B", "C", "y")]
    _, base = host.run_with_cache(tokens, pts)
    v = torch.randn(4, 8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    sv = SteeringVector(f"blocks.{layer}.ssm.state", v, "state")
    _, steered = host.run_with_cache(tokens, pts, hooks=steering_hooks(host, sv, 1.5, torch.tensor([P, P])))
    # float64 reference per head h: S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T (B, C shared by the heads of a group)
    m = host.model.backbone.layers[layer].mixer
    A, D = -torch.exp(m.A_log.double()), m.D.double()
    x, dt, B, C = (base[p].double() for p in pts[:4])
    Bh, Ch = B.repeat_interleave(2, dim=2), C.repeat_interleave(2, dim=2)  # [b, t, h, n]: heads 0-1 group 0, 2-3 group 1
    S = torch.zeros(2, 4, 8, 4, dtype=torch.float64)
    ys = []
    for t in range(12):
        S = torch.exp(dt[:, t] * A)[..., None, None] * S + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        if t == P - 1:
            S = S + 1.5 * v
        ys.append((S * Ch[:, t, :, None, :]).sum(-1) + D[:, None] * x[:, t])
    y_ref = torch.stack(ys, 1)
    torch.testing.assert_close(steered[pts[4]][:, :P], base[pts[4]][:, :P])
    torch.testing.assert_close(steered[pts[4]].double()[:, P:], y_ref[:, P:], atol=1e-4, rtol=1e-4)
    assert (steered[pts[4]][:, P:] - base[pts[4]][:, P:]).abs().max() > 1e-2
    with pytest.raises(UniversalityError, match="Mamba-1 hosts only"):
        steering_hooks(host, SteeringVector(f"blocks.{layer}.ssm.conv_state", torch.zeros(3, 32), "state"), 1.0, torch.tensor([2]))
    with pytest.raises(UniversalityError, match="has shape \\(32, 4\\)"):
        steering_hooks(host, SteeringVector(f"blocks.{layer}.ssm.state", torch.zeros(32, 4), "state"), 1.0, torch.tensor([2]))


def test_steering_adds_no_forward_and_rejects_bad_state_hooks(save_model):
    """A dose-response runs one host forward per prompt batch and multiplier, for every method (the goal: at most one
    extra forward per prompt and multiplier); state hooks the host lacks are one sentence."""
    host = _mamba_host(save_model)
    rows = {"n": 0}
    forward = host._forward

    def counted(tokens, run):
        rows["n"] += tokens.shape[0]
        return forward(tokens, run)

    host._forward = counted
    g = torch.Generator().manual_seed(9)
    prompts = PromptSet([torch.randint(0, 50, (int(n),), generator=g).tolist() for n in (6, 9, 7, 12, 8)])
    pos, neg = PromptSet([[1, 2, 3, 4]]), PromptSet([[5, 6, 7]])
    mult = [0.0, 1.0, 3.0]
    for hook in ("blocks.1.resid_post", "blocks.1.ssm.state", "blocks.1.ssm.conv_state"):
        sv = contrast_vector(host, pos, neg, hook)
        rows["n"] = 0
        dr = dose_response(host, sv, prompts, mult, token_class_mass([1, 2]), "m", batch=2)
        assert rows["n"] == len(prompts.prompts) * len(mult), hook  # one forward of every prompt per multiplier
        assert dr.n_forwards == 3 * len(mult) and dr.values[1] != dr.values[0]
    with pytest.raises(UniversalityError, match="blocks 0..1"):
        contrast_vector(host, pos, neg, "blocks.4.ssm.conv_state")
    with pytest.raises(UniversalityError, match="Mamba-1 hosts only"):
        contrast_vector(AffineHost(), PromptSet([[1]]), PromptSet([[2]]), "blocks.0.ssm.conv_state")
    with pytest.raises(UniversalityError, match="shape \\(3, 32\\)"):
        steering_hooks(host, SteeringVector("blocks.1.ssm.conv_state", torch.zeros(4, 32), "state"), 1.0, torch.tensor([2]))
    with pytest.raises(UniversalityError, match="needs a prefix"):
        steering_hooks(host, SteeringVector("blocks.1.ssm.conv_state", torch.zeros(3, 32), "state"), 1.0, torch.tensor([0]))
