"""Transformer host against Hugging Face's own forward (GPT-2, GPT-NeoX, Llama, Qwen2)."""

from __future__ import annotations

import pytest
import torch

import universality as uv
from hf_reference import assert_cache_matches_hidden_states
from conftest import tiny_transformer

FAMILIES = [("gpt2", {}), ("gpt_neox", {}), ("gpt_neox", {"use_parallel_residual": False}), ("llama", {}), ("qwen2", {})]
IDS = ["gpt2", "neox-parallel", "neox-sequential", "llama-gqa", "qwen2"]


@pytest.fixture(params=FAMILIES, ids=IDS)
def pair(request, save_model):
    mt, over = request.param
    model = tiny_transformer(mt, **over)
    return model, uv.load_host(save_model(model), device="cpu")


def _tokens(host, b=2, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, host.vocab_size, (b, t), generator=g)


def test_logits_and_hidden_states_match_hf(pair):
    model, host = pair
    tok = _tokens(host)
    logits, cache = host.run_with_cache(tok)
    with torch.no_grad():
        ref = model(tok, output_hidden_states=True)
    assert host.arch == "transformer" and host.n_layers == 3 and host.d_model == 32
    torch.testing.assert_close(logits, ref.logits, atol=1e-4, rtol=0)
    hs = ref.hidden_states
    layout = assert_cache_matches_hidden_states(cache, model, tok, atol=1e-5, n_layers=host.n_layers)
    assert layout[0] == "embed"  # every transformers release so far lists a Transformer's embeddings first
    # the last entry is post-norm: it must differ from the last block's resid_post
    assert (cache[f"blocks.{host.n_layers - 1}.resid_post"] - hs[-1]).abs().max() > 1e-2


def test_residual_is_additive(pair):
    _, host = pair
    _, cache = host.run_with_cache(_tokens(host))
    for i in range(host.n_layers):
        p = f"blocks.{i}."
        delta = cache[p + "resid_post"] - cache[p + "resid_pre"]
        torch.testing.assert_close(delta, cache[p + "mixer_out"] + cache[p + "mlp_out"], atol=1e-5, rtol=0)
        if i:
            torch.testing.assert_close(cache[p + "resid_pre"], cache[f"blocks.{i - 1}.resid_post"])


def test_attention_pattern_matches_hf_eager_and_is_causal(pair, save_model):
    model, host = pair
    tok = _tokens(host)
    names = [f"blocks.{i}.attn.pattern" for i in range(host.n_layers)]
    _, cache = host.run_with_cache(tok, names=names)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        ref = model(tok, output_attentions=True)
    for i, n in enumerate(names):
        pat = cache[n]
        assert pat.shape == (2, host.n_heads, tok.shape[1], tok.shape[1])
        torch.testing.assert_close(pat, ref.attentions[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(pat.sum(-1), torch.ones_like(pat.sum(-1)))
        assert pat.triu(1).abs().max() == 0


def test_identity_patch_everywhere_changes_nothing(pair):
    _, host = pair
    tok = _tokens(host)
    clean = host(tok)
    hooks = {n: (lambda x: x.clone()) for n in host.hook_points}
    torch.testing.assert_close(host.run_with_hooks(tok, hooks), clean, atol=1e-5, rtol=0)


@pytest.mark.parametrize("point", ["embed", "blocks.1.resid_pre", "blocks.1.mixer_in", "blocks.1.attn.q", "blocks.1.attn.k",
                                   "blocks.1.attn.v", "blocks.1.attn.pattern", "blocks.1.attn.z", "blocks.1.mixer_out",
                                   "blocks.1.mlp_in", "blocks.1.mlp.act", "blocks.1.mlp_out", "blocks.1.resid_post",
                                   "final_norm"])
def test_zero_ablation_changes_logits(pair, point):
    _, host = pair
    tok = _tokens(host)
    clean = host(tok)
    ablated = host.run_with_hooks(tok, {point: torch.zeros_like})
    assert (ablated - clean).abs().max() > 1e-4


def test_patch_at_one_position_only_affects_later_positions(pair):
    _, host = pair
    tok = _tokens(host)
    clean = host(tok)

    direction = torch.randn(host.d_model, generator=torch.Generator().manual_seed(3))  # not constant: LayerNorm removes means

    def bump(x):
        x = x.clone()
        x[:, 5] += direction
        return x

    patched = host.run_with_hooks(tok, {"blocks.0.resid_post": bump})
    torch.testing.assert_close(patched[:, :5], clean[:, :5], atol=1e-5, rtol=0)
    assert (patched[:, 5:] - clean[:, 5:]).abs().max() > 1e-3


def test_gradients_flow_through_hooks_like_hf(pair):
    """d loss / d (perturbation added at block 1's input) equals the same gradient taken through HF's model."""
    model, host = pair
    tok = _tokens(host)
    delta = torch.zeros(2, tok.shape[1], host.d_model, requires_grad=True)
    logits = host.run_with_hooks(tok, {"blocks.1.resid_pre": lambda x: x + delta})
    logits.logsumexp(-1).sum().backward()
    ours = delta.grad.clone()
    delta.grad = None
    blocks = host.family.blocks
    handle = blocks[1].register_forward_pre_hook(lambda mod, args, kwargs: ((args[0] + delta,) + args[1:], kwargs)
                                                 if args else (args, {**kwargs, "hidden_states": kwargs["hidden_states"] + delta}),
                                                 with_kwargs=True)
    try:
        host.model(tok).logits.logsumexp(-1).sum().backward()  # HF's own forward code
    finally:
        handle.remove()
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, delta.grad, atol=1e-4, rtol=1e-4)


def test_cache_with_patch_in_same_pass_and_early_stop(pair):
    _, host = pair
    tok = _tokens(host)
    _, full = host.run_with_cache(tok, names=["blocks.0.resid_post", "blocks.1.mixer_out"])
    logits, part = host.run_with_cache(tok, names=["blocks.0.resid_post"], return_logits=False)
    assert logits is None and set(part) == {"blocks.0.resid_post"}
    torch.testing.assert_close(part["blocks.0.resid_post"], full["blocks.0.resid_post"])
    _, patched = host.run_with_cache(tok, names=["blocks.0.resid_post", "blocks.1.mixer_out"],
                                     hooks={"blocks.0.resid_post": torch.zeros_like})
    assert patched["blocks.0.resid_post"].abs().max() == 0  # cached after the patch
    assert (patched["blocks.1.mixer_out"] - full["blocks.1.mixer_out"]).abs().max() > 1e-4


def test_shapes_of_attention_points(pair):
    _, host = pair
    tok = _tokens(host, b=3, t=7)
    _, c = host.run_with_cache(tok, names=["blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.z"])
    assert c["blocks.0.attn.q"].shape == (3, 7, host.n_heads, host.head_dim)
    assert c["blocks.0.attn.k"].shape == (3, 7, host.n_kv_heads, host.head_dim)
    assert c["blocks.0.attn.z"].shape == (3, 7, host.n_heads, host.head_dim)


def test_cpu_autocast_training_runs_attention_in_float32_with_correct_gradients(save_model):
    """Under CPU bfloat16 autocast with gradients, attention runs in float32 (its bf16 backward is slow on CPU);
    parameter gradients still match the float32 gradients to bfloat16 accuracy, and inference keeps bf16 attention."""
    host = uv.load_host(save_model(tiny_transformer("gpt_neox")), device="cpu")
    tok = _tokens(host, b=2, t=16)
    dtypes = {}
    hooks = {"blocks.0.attn.z": lambda z: dtypes.setdefault("z", z.dtype) and z}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        host.run_with_hooks(tok, hooks).float().logsumexp(-1).sum().backward()
    assert dtypes.pop("z") == torch.float32
    w = host.family.blocks[0].attention.query_key_value.weight
    mixed = w.grad.clone()
    w.grad = None
    host.run_with_hooks(tok, {}).logsumexp(-1).sum().backward()
    rel = (mixed - w.grad).norm() / w.grad.norm()
    assert 0 < rel < 0.05
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        host.run_with_hooks(tok, hooks)
    assert dtypes["z"] == torch.bfloat16
