"""LM-loss evaluation with a dictionary spliced into a tiny GPT-NeoX, against HF's own forward with a module hook."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import universality as uv
from conftest import tiny_transformer
from universality import sae


def _hf_loss(model, tokens, layer, replace=None):
    """Mean next-token loss of the HF model, optionally replacing layer ``layer``'s output hidden state."""
    handle = None
    if replace is not None:
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (replace(output[0]),) + tuple(output[1:])
            return replace(output)
        handle = model.gpt_neox.layers[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(tokens).logits
    finally:
        if handle is not None:
            handle.remove()
    return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)))


def test_evaluate_lm_loss_matches_hf_forward_hooks(save_model):
    model = tiny_transformer("gpt_neox")
    host = uv.load_host(save_model(model), device="cpu")
    hook = "blocks.1.resid_post"
    g = torch.Generator().manual_seed(0)
    train_tokens = torch.randint(0, host.vocab_size, (64, 24), generator=g)
    with torch.no_grad():
        _, cache = host.run_with_cache(train_tokens, names=[hook], return_logits=False)
    acts = cache[hook].reshape(-1, host.d_model)
    coder = sae.fit(acts, kind="topk", n_latents=64, k=8, seed=1, batch_size=256, n_tokens=256 * 150, hook=hook, device="cpu")

    tokens = torch.randint(0, host.vocab_size, (6, 20), generator=g)
    r = sae.evaluate_lm_loss(host, coder, hook, tokens, batch_size=4)

    clean = _hf_loss(model, tokens, 1)
    spliced = _hf_loss(model, tokens, 1, replace=lambda h: coder(h).to(h.dtype))
    zero = _hf_loss(model, tokens, 1, replace=torch.zeros_like)
    assert abs(r.clean - clean) < 1e-4 * max(1, clean)
    assert abs(r.spliced - spliced) < 1e-4 * max(1, spliced)
    assert abs(r.zero_ablation - zero) < 1e-4 * max(1, zero)
    assert abs(r.fraction_recovered - (zero - spliced) / (zero - clean)) < 1e-3
    print(f"\nLM loss: clean {r.clean:.4f}, spliced {r.spliced:.4f}, zero {r.zero_ablation:.4f}, recovered {r.fraction_recovered:.3f}, FVU {coder.metrics.fvu:.3f}")
    # a trained dictionary is better than ablating the residual stream
    assert r.fraction_recovered > 0.5
    # the hook recorded in the dictionary is used when none is given
    assert sae.evaluate_lm_loss(host, coder, None, tokens[:2]).clean == sae.evaluate_lm_loss(host, coder, hook, tokens[:2]).clean
