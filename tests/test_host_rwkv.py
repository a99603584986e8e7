"""The RWKV-4 host against transformers' own RwkvForCausalLM on tiny random-init checkpoints."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import universality as uv
from hf_reference import assert_cache_matches_hidden_states
from universality._errors import UniversalityError

N_LAYERS, RESCALE_EVERY, VOCAB, SEQ = 4, 2, 61, 10


def tiny_rwkv(**overrides) -> tf.RwkvForCausalLM:
    """A 4-block RWKV-4 with non-trivial mixes, decays, norms and embeddings (rescaled after blocks 1 and 3)."""
    cfg = tf.RwkvConfig(vocab_size=VOCAB, hidden_size=24, attention_hidden_size=24, intermediate_size=48,
                        num_hidden_layers=N_LAYERS, rescale_every=RESCALE_EVERY, context_length=64,
                        bos_token_id=0, eos_token_id=0)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(7)
    model = tf.RwkvForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "time_mix" in name:
                p.uniform_(0.0, 1.0)
            elif "time_decay" in name:
                p.copy_(torch.randn_like(p) * 1.5)
            elif "time_first" in name:
                p.copy_(torch.randn_like(p))
            elif "embeddings" in name:
                p.copy_(torch.randn_like(p))
            elif "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("rwkv") / "ckpt"
    tiny_rwkv().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def shared_host(ckpt):
    """One host for the tests that only read (never edit weights or switch modes)."""
    return uv.load_host(ckpt)


def _ref(path) -> tf.RwkvForCausalLM:
    return tf.RwkvForCausalLM.from_pretrained(path).eval()


def _tokens(seed=0, b=3, t=SEQ):
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def test_logits_and_hidden_states_match_hf(ckpt):
    host, ref = uv.load_host(ckpt), _ref(ckpt)
    assert (host.arch, host.n_layers, host.d_model, host.vocab_size) == ("rwkv", N_LAYERS, 24, VOCAB)
    tokens = _tokens()
    with torch.no_grad():
        out = ref(tokens, output_hidden_states=True, use_cache=False)
        logits, cache = host.run_with_cache(tokens)
    assert torch.allclose(logits, out.logits, atol=1e-4)
    # transformers 5.25 lists one entry per block (after its halving), then the final norm; derived, not assumed
    layout = assert_cache_matches_hidden_states(cache, ref, tokens, atol=1e-5, n_layers=N_LAYERS)
    assert all(f"blocks.{i}.resid_post" in layout for i in range(N_LAYERS))  # every halving is checked
    embed = ref.rwkv.embeddings(tokens)
    assert torch.allclose(cache["embed"], embed)
    assert torch.allclose(cache["blocks.0.resid_pre"], ref.rwkv.blocks[0].pre_ln(embed), atol=1e-6)
    assert "blocks.0.att.state" not in cache  # on demand only


def test_residual_invariant_with_rescaling(ckpt):
    host = uv.load_host(ckpt)
    _, cache = host.run_with_cache(_tokens())
    halved = []
    for i in range(N_LAYERS):
        pre, post = cache[f"blocks.{i}.resid_pre"], cache[f"blocks.{i}.resid_post"]
        delta = cache[f"blocks.{i}.mixer_out"] + cache[f"blocks.{i}.mlp_out"]
        if host.halves_after(i):
            halved.append(i)
            assert torch.allclose(2 * post - pre, delta, atol=1e-5), i
            assert not torch.allclose(post - pre, delta, atol=1e-3), i
        else:
            assert torch.allclose(post - pre, delta, atol=1e-5), i
        if i + 1 < N_LAYERS:
            assert torch.equal(post, cache[f"blocks.{i + 1}.resid_pre"])
    assert halved == [1, 3]


def test_train_mode_is_additive_and_eval_stream_is_scaled_copy(ckpt):
    evaluated = uv.load_host(ckpt)
    trained = uv.load_host(ckpt)
    trained.model.train()
    tokens = _tokens()
    with torch.no_grad():
        _, ev = evaluated.run_with_cache(tokens)
        _, tr = trained.run_with_cache(tokens)
        ref = _ref(ckpt).train()
        ref_logits = ref(tokens, use_cache=False).logits
        logits = trained(tokens)
    assert torch.allclose(logits, ref_logits, atol=1e-4)
    for i in range(N_LAYERS):
        assert not trained.halves_after(i)
        delta = tr[f"blocks.{i}.mixer_out"] + tr[f"blocks.{i}.mlp_out"]
        assert torch.allclose(tr[f"blocks.{i}.resid_post"] - tr[f"blocks.{i}.resid_pre"], delta, atol=1e-5)
        # eval stream after block i is the training stream divided by 2**((i+1) // rescale_every)
        scale = 2 ** ((i + 1) // RESCALE_EVERY)
        # (layer norm eps makes the halving only nearly invisible downstream)
        assert torch.allclose(ev[f"blocks.{i}.resid_post"] * scale, tr[f"blocks.{i}.resid_post"], atol=1e-4, rtol=1e-4)


def test_identity_patch_of_every_point_changes_nothing(ckpt):
    host = uv.load_host(ckpt)
    tokens = _tokens(1)
    with torch.no_grad():
        base = host(tokens)
        hooks = {name: (lambda x: x.clone()) for name in host.hook_points}
        patched, cache = host.run_with_cache(tokens, names=["blocks.2.att.state"], hooks=hooks)
    assert torch.allclose(patched, base, atol=1e-6)
    assert cache["blocks.2.att.state"].shape == (3, SEQ, 24, 3)


@pytest.mark.parametrize("point", ["embed", "blocks.1.resid_pre", "blocks.1.mixer_in", "blocks.1.att.shift",
                                   "blocks.1.att.r", "blocks.1.att.k", "blocks.1.att.v", "blocks.1.att.state",
                                   "blocks.1.att.wkv", "blocks.1.mixer_out", "blocks.1.mlp_in", "blocks.1.ffn.shift",
                                   "blocks.1.ffn.k", "blocks.1.ffn.v", "blocks.1.ffn.r", "blocks.1.mlp_out",
                                   "blocks.1.resid_post", "final_norm"])
def test_zero_ablation_changes_logits(shared_host, point):
    host = shared_host
    tokens = _tokens(2)
    with torch.no_grad():
        base = host(tokens)
        ablated = host.run_with_hooks(tokens, {point: torch.zeros_like})
    assert (ablated - base).abs().max() > 1e-3


def test_att_state_last_position_matches_float64_recurrence_and_hf_cache(ckpt):
    host, ref = uv.load_host(ckpt), _ref(ckpt)
    tokens = _tokens(3)
    names = [f"blocks.{i}.{p}" for i in range(N_LAYERS) for p in ("att.k", "att.v", "att.state")]
    with torch.no_grad():
        _, cache = host.run_with_cache(tokens, names=names)
        hf_state = ref(tokens, use_cache=True).state
    for i in range(N_LAYERS):
        k, v = cache[f"blocks.{i}.att.k"].double(), cache[f"blocks.{i}.att.v"].double()
        w = torch.exp(host.model.rwkv.blocks[i].attention.time_decay.detach().double())
        a = torch.zeros_like(k[:, 0])
        a_abs = torch.zeros_like(k[:, 0])
        b = torch.zeros_like(k[:, 0])
        for t in range(SEQ):  # the plain recurrence in real (unscaled) numbers
            a = torch.exp(-w) * a + torch.exp(k[:, t]) * v[:, t]
            a_abs = torch.exp(-w) * a_abs + torch.exp(k[:, t]) * v[:, t].abs()
            b = torch.exp(-w) * b + torch.exp(k[:, t])
        state = cache[f"blocks.{i}.att.state"]
        assert state.shape == (3, SEQ, 24, 3)
        num, den, scale = state[:, -1].double().unbind(-1)
        # float32 error is relative to the sum of the terms' magnitudes: the numerator sums terms of both
        # signs, so an entry near zero (cancellation) carries the absolute error of the whole sum
        assert ((num * torch.exp(scale) - a).abs() <= 1e-6 * a_abs + 1e-8).all(), i
        assert ((den * torch.exp(scale) - b).abs() <= 1e-6 * b + 1e-8).all(), i
        # same (num, den, log_scale) triple as transformers' cache: state[2:5] is [b, d, layer]
        for f in range(3):
            assert torch.allclose(state[:, -1, :, f], hf_state[2 + f][:, :, i], rtol=1e-5, atol=1e-5), (i, f)


def test_att_state_patch_changes_wkv_at_next_position_only(ckpt):
    host = uv.load_host(ckpt)
    tokens, s = _tokens(4), 4
    names = ["blocks.2.att.wkv", "blocks.2.att.state"]
    with torch.no_grad():
        _, clean = host.run_with_cache(tokens, names=names)

        def scramble(state):
            state = state.clone()
            state[:, s, :, 0] = -3 * state[:, s, :, 0] + 1.0  # a different numerator at position s only
            return state

        _, patched = host.run_with_cache(tokens, names=names, hooks={"blocks.2.att.state": scramble})
    changed = (patched["blocks.2.att.wkv"] - clean["blocks.2.att.wkv"]).abs().amax((0, 2)) > 1e-6
    assert changed.tolist() == [t == s + 1 for t in range(SEQ)]


def test_previous_token_only_time_mix(save_model):
    model = tiny_rwkv()
    with torch.no_grad():
        att = model.rwkv.blocks[0].attention
        for p in (att.time_mix_key, att.time_mix_value, att.time_mix_receptance):
            p.zero_()  # take only the shifted (previous-position) input
    host = uv.load_host(save_model(model))
    tokens, s = _tokens(5), 6
    other = tokens.clone()
    other[:, s] = (other[:, s] + 1) % VOCAB
    names = ["blocks.0.att.k", "blocks.0.att.v", "blocks.0.att.r"]
    with torch.no_grad():
        _, a = host.run_with_cache(tokens, names=names)
        _, b = host.run_with_cache(other, names=names)
    for name in names:
        changed = (a[name] - b[name]).abs().amax((0, 2)) > 1e-7
        assert changed.tolist() == [t == s + 1 for t in range(SEQ)], name
    assert torch.equal(a["blocks.0.att.k"][:, 0], torch.zeros_like(a["blocks.0.att.k"][:, 0]))


def test_gradients_match_hf(ckpt):
    host, ref = uv.load_host(ckpt), _ref(ckpt)
    tokens = _tokens(6)
    host(tokens), ref(tokens, use_cache=False)  # both rescale their weights on the first eval forward
    host.model.zero_grad(), ref.zero_grad()
    torch.nn.functional.cross_entropy(host(tokens).flatten(0, 1), tokens.flatten()).backward()
    torch.nn.functional.cross_entropy(ref(tokens, use_cache=False).logits.flatten(0, 1), tokens.flatten()).backward()
    ours = dict(host.model.named_parameters())
    for name, p in ref.named_parameters():
        assert p.grad is not None, name
        assert torch.allclose(ours[name].grad, p.grad, atol=1e-5, rtol=1e-3), name


def test_gradients_flow_through_att_state_path(ckpt):
    host = uv.load_host(ckpt)
    tokens = _tokens(6)
    host(tokens)  # rescale once, before either gradient is taken

    def grads(hooks):
        host.model.zero_grad()
        embed_grad = {}

        def keep(x):
            x.retain_grad()
            embed_grad["x"] = x
            return x

        logits, _ = host.run_with_cache(tokens, names=[], hooks={"embed": keep, **hooks})
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
        return embed_grad["x"].grad.clone(), host.model.rwkv.blocks[1].attention.time_decay.grad.clone()

    fused = grads({})
    via_state = grads({"blocks.1.att.state": lambda s: s * 1.0})
    for a, b in zip(fused, via_state):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_float64_host_runs_wkv_in_float64(save_model):
    path = save_model(tiny_rwkv())
    host64, host32 = uv.load_host(path, dtype="float64"), uv.load_host(path)
    tokens = _tokens(7)
    with torch.no_grad():
        logits64, cache = host64.run_with_cache(tokens, names=["blocks.3.att.k", "blocks.3.att.v", "blocks.3.att.wkv"])
        logits32 = host32(tokens)
    assert logits64.dtype == torch.float64
    assert torch.allclose(logits64.float(), logits32, atol=1e-4)
    att = host64.model.rwkv.blocks[3].attention
    k, v, w, u = cache["blocks.3.att.k"], cache["blocks.3.att.v"], torch.exp(att.time_decay), att.time_first
    a, b = torch.zeros_like(k[:, 0]), torch.zeros_like(k[:, 0])
    expected = []
    for t in range(SEQ):
        e = torch.exp(u + k[:, t])
        expected.append((a + e * v[:, t]) / (b + e))
        a, b = torch.exp(-w) * a + torch.exp(k[:, t]) * v[:, t], torch.exp(-w) * b + torch.exp(k[:, t])
    assert torch.allclose(cache["blocks.3.att.wkv"], torch.stack(expected, 1), atol=1e-12)


def test_stop_after_last_needed_block(ckpt):
    host = uv.load_host(ckpt)
    tokens = _tokens(8)
    with torch.no_grad():
        _, full = host.run_with_cache(tokens)
        logits, part = host.run_with_cache(tokens, names=["blocks.1.resid_post", "blocks.0.att.state"],
                                           return_logits=False)
    assert logits is None and set(part) == {"blocks.1.resid_post", "blocks.0.att.state"}
    # reading att.state runs that block's WKV through the stored states, not the prefix sums: equal to rounding
    assert torch.allclose(part["blocks.1.resid_post"], full["blocks.1.resid_post"], atol=1e-5, rtol=1e-5)


def test_weights_are_read_at_call_time(ckpt):
    host = uv.load_host(ckpt)
    tokens = _tokens(9)
    with torch.no_grad():
        before = host(tokens)
        host.model.rwkv.blocks[2].attention.time_decay.add_(1.0)
        after = host(tokens)
        ref_logits = host.model(tokens, use_cache=False).logits
    assert (after - before).abs().max() > 1e-4
    assert torch.allclose(after, ref_logits, atol=1e-4)


def test_misspelled_point_names_closest(ckpt):
    host = uv.load_host(ckpt)
    with pytest.raises(UniversalityError, match="blocks.0.att.wkv"):
        host.run_with_cache(_tokens(), names=["blocks.0.att.wvk"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_host_matches_cpu(ckpt):
    cpu, gpu = uv.load_host(ckpt, device="cpu"), uv.load_host(ckpt, device="cuda")
    tokens = _tokens()
    with torch.no_grad():
        assert torch.allclose(gpu(tokens).cpu(), cpu(tokens), atol=1e-4)
